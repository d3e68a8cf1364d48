"""C++: functions, methods (in class bodies or qualified out-of-line), GoogleTest/Catch2 tests.

Headers ending in ``.h`` are parsed as C++: its grammar reads C declarations as well, while the C
grammar fails on the classes and templates that C++ headers hold.
"""

from __future__ import annotations

from mtpeft.scan.languages.base import LanguageSpec
from mtpeft.scan.languages.cfamily import extract

SPEC = LanguageSpec(
    name="cpp",
    extensions=(".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".h", ".ipp", ".tpp", ".inl"),
    grammar_module="tree_sitter_cpp",
    extract=extract,
    qualifier="::",
)
