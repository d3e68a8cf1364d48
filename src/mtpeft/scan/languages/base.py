"""What every language module provides, and the small tree helpers they share.

A language module only decides WHICH nodes are units and what they are called; turning a node
into a :class:`~mtpeft.scan.units.CodeUnit` (lines, columns, text) is done once, in extract.py.

Walking: every language walks its tree with :func:`walk`, an explicit stack, never recursion. A
file is as deep as its author made it (5,000 nested namespaces or ``#if``s are legal code), and
Python's recursion limit (1,000 frames) must not decide which files a scan can read.

Shared policy, the same in every language: a unit is the OUTERMOST function-like definition.
Anything defined inside a function body (nested functions, lambdas, local and anonymous classes)
is part of that function's text and not a unit of its own, so the same lines are never analysed
or reported twice. Classes, namespaces and other type bodies are entered, giving qualified names
such as ``Outer.Inner.method``. Declarations without a body (abstract methods, prototypes) are
not units: there is no code to analyse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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

S = TypeVar("S")


@dataclass(frozen=True)
class Scope:
    """The names enclosing a node, innermost last, as a linked list.

    Entering a scope is one cell, so n nested classes cost n cells; tuples rebuilt at each level
    would cost n^2 / 2 slots (100 MB for 5,000 levels).
    """

    name: str
    parent: Scope | None = None

    def names(self) -> list[str]:
        found: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            found.append(scope.name)
            scope = scope.parent
        return found[::-1]


def enter(scope: Scope | None, name: str) -> Scope:
    return Scope(name, scope)


def qualified(scope: Scope | None, name: str, separator: str) -> str:
    return separator.join([*(scope.names() if scope is not None else []), name])


@dataclass(frozen=True)
class Enter(Generic[S]):
    """What a visitor returns to walk ``node``'s named children next, with ``state`` as their scope."""

    node: Node
    state: S


Visitor = Callable[[Node, "Node | None", S], "Found | Enter[S] | None"]


class _Frame(Generic[S]):
    __slots__ = ("children", "index", "state")

    def __init__(self, node: Node, state: S) -> None:
        self.children = node.named_children
        self.index = 0
        self.state = state


def walk(root: Node, state: S, visit: Visitor[S]) -> Iterator[Found]:
    """Depth-first over named children, in source order, with an explicit stack (no recursion).

    ``visit(child, next_sibling, state)`` says what a child is: a unit (Found), a container to walk
    (Enter), or nothing. The next sibling is there for units that span two nodes (Catch2).
    """
    stack: list[_Frame[S]] = [_Frame(root, state)]
    while stack:
        frame = stack[-1]
        if frame.index >= len(frame.children):
            stack.pop()
            continue
        child = frame.children[frame.index]
        frame.index += 1
        following = frame.children[frame.index] if frame.index < len(frame.children) else None
        step = visit(child, following, frame.state)
        if isinstance(step, Found):
            yield step
        elif isinstance(step, Enter):
            stack.append(_Frame(step.node, step.state))


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
