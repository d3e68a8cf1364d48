"""`mtpeft serve`: the HTTP API (app.py), micro-batching (batcher.py), metrics, limits and the page."""
