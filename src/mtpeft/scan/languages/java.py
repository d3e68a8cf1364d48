"""Java: methods and constructors of classes, interfaces, enums and records; JUnit tests.

A method is a test when it carries one of the JUnit 4/5 test annotations (or jqwik's ``@Property``)
in :data:`TEST_ANNOTATIONS` (plain or qualified: ``@Test``, ``@org.junit.jupiter.api.Test``,
``@ParameterizedTest(...)``), or when it is a JUnit 3 test: named ``test*`` in a class that
extends ``...TestCase``. Constructors are named ``Class.Class``. Methods of anonymous and local
classes belong to the enclosing method (see languages/base.py). Names carry no package: the
path already says where the class is.
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

TEST_ANNOTATIONS = frozenset(
    {"Test", "ParameterizedTest", "RepeatedTest", "TestFactory", "TestTemplate", "Theory", "Property"}
)
_TYPE_DECLARATIONS = {
    "class_declaration",
    "interface_declaration",
    "enum_declaration",
    "record_declaration",
    "annotation_type_declaration",
}
# Containers entered in the same scope; ERROR is tree-sitter's recovery node, whose parsed parts still count.
_BODIES = {
    "class_body",
    "interface_body",
    "enum_body",
    "enum_body_declarations",
    "annotation_type_body",
    "ERROR",
}
_METHODS = {"method_declaration", "constructor_declaration", "compact_constructor_declaration"}


@dataclass(frozen=True)
class _State:
    scope: Scope | None
    junit3: bool  # inside a class that extends ...TestCase: its test* methods are tests


def extract(root: Node, ctx: FileContext) -> Iterator[Found]:
    def visit(child: Node, _following: Node | None, state: _State) -> Found | Enter[_State] | None:
        return _visit(child, state, ctx)

    return walk(root, _State(None, False), visit)


def _visit(child: Node, state: _State, ctx: FileContext) -> Found | Enter[_State] | None:
    if child.type in _TYPE_DECLARATIONS:
        return _type(child, state.scope, ctx)
    if child.type in _BODIES:
        return Enter(child, state)
    if child.type == "enum_constant" and (body := child.child_by_field_name("body")) is not None:
        return Enter(body, _State(enter(state.scope, field_text(child, "name", ctx)), False))
    if child.type in _METHODS and child.child_by_field_name("body") is not None:
        return _method(child, state, ctx)
    return None


def _type(node: Node, scope: Scope | None, ctx: FileContext) -> Enter[_State] | None:
    name = field_text(node, "name", ctx)
    superclass = field_text(node, "superclass", ctx)  # "extends TestCase" or ""
    junit3 = superclass.rstrip().endswith("TestCase")
    body = node.child_by_field_name("body")
    return Enter(body, _State(enter(scope, name), junit3)) if body is not None else None


def _method(node: Node, state: _State, ctx: FileContext) -> Found:
    if node.type == "method_declaration":
        name = field_text(node, "name", ctx)
    else:  # constructors take the class name
        name = state.scope.name if state.scope is not None else field_text(node, "name", ctx)
    is_test = _has_test_annotation(node, ctx) or (
        state.junit3 and node.type == "method_declaration" and name.startswith("test")
    )
    return Found(node, qualified(state.scope, name, "."), "test" if is_test else "method")


def _has_test_annotation(node: Node, ctx: FileContext) -> bool:
    modifiers = next((c for c in node.children if c.type == "modifiers"), None)
    if modifiers is None:
        return False
    for child in modifiers.named_children:
        if child.type in ("marker_annotation", "annotation"):
            name = field_text(child, "name", ctx)
            if name.rsplit(".", 1)[-1].strip() in TEST_ANNOTATIONS:
                return True
    return False


SPEC = LanguageSpec(name="java", extensions=(".java",), grammar_module="tree_sitter_java", extract=extract)
