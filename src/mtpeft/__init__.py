"""mtpeft: one language model, many code-analysis skills."""

__version__ = "0.1.0"
