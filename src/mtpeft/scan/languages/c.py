"""C: function definitions and C test-framework macros (see cfamily.py for the rules)."""

from __future__ import annotations

from mtpeft.scan.languages.base import LanguageSpec
from mtpeft.scan.languages.cfamily import extract

SPEC = LanguageSpec(
    name="c", extensions=(".c",), grammar_module="tree_sitter_c", extract=extract, qualifier="::"
)
