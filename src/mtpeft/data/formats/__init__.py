"""Format readers, one module per published format; importing this package registers them all."""

from mtpeft.data.formats import (  # noqa: F401  (imported for their @register_format side effect)
    bigclonebench,
    code_refinement,
    codesearchnet,
    devign,
    flakeflagger,
    jsonl,
)
from mtpeft.data.formats.base import FORMATS, FormatReader, available_splits, get_format, load_split

__all__ = ["FORMATS", "FormatReader", "available_splits", "get_format", "load_split"]
