"""Reading, checking and batching task data."""
