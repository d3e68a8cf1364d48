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

from mtpeft.scan.languages.base import FileContext, Found, LanguageSpec, field_text

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
class _Scope:
    names: tuple[str, ...] = ()
    in_class: bool = False
    test_class: bool = False


def is_test_file(file_name: str) -> bool:
    return file_name.endswith(".py") and (file_name.startswith("test_") or file_name.endswith("_test.py"))


def extract(root: Node, ctx: FileContext) -> Iterator[Found]:
    test_classes: set[str] = set()  # names of test classes seen so far in this file
    yield from _walk(root, _Scope(), ctx, test_classes, is_test_file(ctx.file_name))


def _walk(
    node: Node, scope: _Scope, ctx: FileContext, test_classes: set[str], test_file: bool
) -> Iterator[Found]:
    for child in node.named_children:
        definition = (
            child.child_by_field_name("definition") if child.type == "decorated_definition" else child
        )
        if definition is None:
            continue
        if definition.type == "function_definition":
            yield _function(child, definition, scope, ctx, test_file)
        elif definition.type == "class_definition":
            yield from _class(definition, scope, ctx, test_classes, test_file)
        elif definition.type in _COMPOUND:
            yield from _walk(definition, scope, ctx, test_classes, test_file)


def _function(outer: Node, definition: Node, scope: _Scope, ctx: FileContext, test_file: bool) -> Found:
    name = field_text(definition, "name", ctx)
    starts_test = name.startswith("test")
    if scope.in_class:
        kind = (
            "test" if starts_test and (scope.test_class or (test_file and _pytest_class(scope))) else "method"
        )
    else:
        kind = "test" if starts_test and test_file and not scope.names else "function"
    return Found(outer, ".".join((*scope.names, name)), kind)


def _pytest_class(scope: _Scope) -> bool:
    return bool(scope.names) and scope.names[-1].startswith("Test")


def _class(
    definition: Node, scope: _Scope, ctx: FileContext, test_classes: set[str], test_file: bool
) -> Iterator[Found]:
    name = field_text(definition, "name", ctx)
    bases = _base_names(definition, ctx)
    is_test = any(b.endswith("TestCase") or b in test_classes for b in bases)
    if is_test:
        test_classes.add(name)
    body = definition.child_by_field_name("body")
    if body is not None:
        inner = _Scope((*scope.names, name), in_class=True, test_class=is_test)
        yield from _walk(body, inner, ctx, test_classes, test_file)


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
