"""What every language module provides, and the small tree helpers they share.

A language module only decides WHICH nodes are units and what they are called; turning a node
into a :class:`~mtpeft.scan.units.CodeUnit` (lines, columns, text) is done once, in extract.py.

Shared policy, the same in every language: a unit is the OUTERMOST function-like definition.
Anything defined inside a function body (nested functions, lambdas, local and anonymous classes)
is part of that function's text and not a unit of its own, so the same lines are never analysed
or reported twice. Classes, namespaces and other type bodies are entered, giving qualified names
such as ``Outer.Inner.method``. Declarations without a body (abstract methods, prototypes) are
not units: there is no code to analyse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tree_sitter import Language, Node, Parser


@dataclass(frozen=True)
class Found:
    """A unit as a language module reports it: its node (or first and last node), name and kind."""

    node: Node
    name: str
    kind: str  # function | method | test
    end_node: Node | None = None  # when the unit spans siblings (Catch2: `TEST_CASE("x")` + `{...}`)


@dataclass(frozen=True)
class FileContext:
    path: str  # relative, '/'-separated
    source: bytes

    def text(self, node: Node | None) -> str:
        if node is None:
            return ""
        return self.source[node.start_byte : node.end_byte].decode("utf-8", "replace")

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


Extractor = Callable[[Node, FileContext], Iterable[Found]]


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    extensions: tuple[str, ...]  # lower-case, with the dot
    grammar_module: str  # an official tree-sitter grammar wheel, e.g. "tree_sitter_python"
    extract: Extractor
    qualifier: str = "."  # joins scopes in qualified names

    def language(self) -> Language:
        return _language(self.grammar_module)

    def parser(self) -> Parser:
        return Parser(self.language())


_LANGUAGE_CACHE: dict[str, Language] = {}


def _language(module_name: str) -> Language:
    # Imported lazily: importing mtpeft.scan should not load four grammars it may not need.
    if module_name not in _LANGUAGE_CACHE:
        module: Any = importlib.import_module(module_name)
        _LANGUAGE_CACHE[module_name] = Language(module.language())
    return _LANGUAGE_CACHE[module_name]


def field_text(node: Node, field: str, ctx: FileContext) -> str:
    return ctx.text(node.child_by_field_name(field))


def squash(text: str) -> str:
    """One-line form of a name that may span lines or carry spaces (``operator ==``, ``a :: b``)."""
    return " ".join(text.split()).replace(" :: ", "::").replace(":: ", "::").replace(" ::", "::")
