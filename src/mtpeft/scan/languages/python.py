"""Python: functions, methods, and tests as pytest and unittest find them.

A unit is a test when it is
- a method named ``test*`` of a class that derives from ``...TestCase`` (unittest, Django,
  ``IsolatedAsyncioTestCase``) or from a test class defined earlier in the same file, in any file;
- in a test file (``test_*.py`` or ``*_test.py``, pytest's defaults): a module-level function named
  ``test*``, or a method named ``test*`` of a class named ``Test*``.
Decorators belong to the unit (as Java annotations do), so a unit starts at its first decorator.
Functions defined under module- or class-level ``if``/``try``/``with``/loops are found too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tree_sitter import Node

from mtpeft.scan.languages.base import (
    Enter,
    FileContext,
    Found,
    LanguageSpec,
    Scope,
    enter,
    field_text,
    qualified,
    walk,
)

# Statements whose blocks can hold module- or class-level definitions (`if sys.platform == ...: def f`).
_COMPOUND = {
    "if_statement",
    "elif_clause",
    "else_clause",
    "try_statement",
    "except_clause",
    "except_group_clause",
    "finally_clause",
    "with_statement",
    "for_statement",
    "while_statement",
    "block",
    "ERROR",  # tree-sitter's recovery node: what parsed inside it is still extracted
}


@dataclass(frozen=True)
class _State:
    scope: Scope | None = None
    in_class: bool = False
    test_class: bool = False


def is_test_file(file_name: str) -> bool:
    return file_name.endswith(".py") and (file_name.startswith("test_") or file_name.endswith("_test.py"))


def extract(root: Node, ctx: FileContext) -> Iterator[Found]:
    test_classes: set[str] = set()  # names of test classes seen so far in this file (source order)
    test_file = is_test_file(ctx.file_name)

    def visit(child: Node, _following: Node | None, state: _State) -> Found | Enter[_State] | None:
        definition = (
            child.child_by_field_name("definition") if child.type == "decorated_definition" else child
        )
        if definition is None:
            return None
        if definition.type == "function_definition":
            return _function(child, definition, state, ctx, test_file)
        if definition.type == "class_definition":
            return _class(definition, state, ctx, test_classes)
        if definition.type in _COMPOUND:
            return Enter(definition, state)
        return None

    return walk(root, _State(), visit)


def _function(outer: Node, definition: Node, state: _State, ctx: FileContext, test_file: bool) -> Found:
    name = field_text(definition, "name", ctx)
    starts_test = name.startswith("test")
    if state.in_class:
        pytest_class = state.scope is not None and state.scope.name.startswith("Test")
        kind = "test" if starts_test and (state.test_class or (test_file and pytest_class)) else "method"
    else:
        kind = "test" if starts_test and test_file and state.scope is None else "function"
    return Found(outer, qualified(state.scope, name, "."), kind)


def _class(definition: Node, state: _State, ctx: FileContext, test_classes: set[str]) -> Enter[_State] | None:
    name = field_text(definition, "name", ctx)
    bases = _base_names(definition, ctx)
    is_test = any(b.endswith("TestCase") or b in test_classes for b in bases)
    if is_test:
        test_classes.add(name)
    body = definition.child_by_field_name("body")
    if body is None:
        return None
    return Enter(body, _State(enter(state.scope, name), in_class=True, test_class=is_test))


def _base_names(definition: Node, ctx: FileContext) -> list[str]:
    """Last dotted component of each base class: ``unittest.TestCase`` -> ``TestCase``."""
    args = definition.child_by_field_name("superclasses")
    if args is None:
        return []
    names = []
    for arg in args.named_children:
        if arg.type in ("identifier", "attribute"):
            names.append(ctx.text(arg).rsplit(".", 1)[-1].strip())
    return names


SPEC = LanguageSpec(name="python", extensions=(".py",), grammar_module="tree_sitter_python", extract=extract)
