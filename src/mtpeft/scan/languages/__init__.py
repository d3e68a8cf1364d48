"""The language registry: one module per language, each exporting a ``SPEC``.

Adding a language is one module with an ``extract`` function (see base.py) and one line here.
"""

from __future__ import annotations

from mtpeft.scan.languages import c, cpp, java, python
from mtpeft.scan.languages.base import FileContext, Found, LanguageSpec

LANGUAGES: dict[str, LanguageSpec] = {spec.name: spec for spec in (python.SPEC, java.SPEC, c.SPEC, cpp.SPEC)}

EXTENSIONS: dict[str, LanguageSpec] = {ext: spec for spec in LANGUAGES.values() for ext in spec.extensions}


def language_for(file_name: str) -> LanguageSpec | None:
    """The language of a file by its (case-insensitive) extension; None for files not scanned."""
    dot = file_name.rfind(".")
    return EXTENSIONS.get(file_name[dot:].lower()) if dot > 0 else None


__all__ = ["EXTENSIONS", "LANGUAGES", "FileContext", "Found", "LanguageSpec", "language_for"]
