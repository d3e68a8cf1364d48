"""The C-family walker shared by c.py and cpp.py: function definitions, methods, test macros.

Definitions are found at file level, inside preprocessor conditionals, ``extern "C" {}``, templates,
namespaces and class/struct/union bodies. Names are qualified with ``::`` (``ns::Foo::get``); an
out-of-line definition keeps the qualification it is written with (``Foo::get``) and is a
``method`` whenever it is qualified or inside a class body, since without type resolution a
namespace and a class look alike.

Tests: a definition written as a test-framework macro is a ``test`` unit named ``Suite.Name``:
GoogleTest ``TEST``/``TEST_F``/``TEST_P``/``TYPED_TEST``/``TYPED_TEST_P``, Criterion ``Test``,
Check ``START_TEST``, and Catch2/doctest ``TEST_CASE``/``SCENARIO`` (named by their string).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tree_sitter import Node

from mtpeft.scan.languages.base import (
    Enter,
    FileContext,
    Found,
    Scope,
    enter,
    field_text,
    qualified,
    squash,
    walk,
)

TEST_MACROS = frozenset({"TEST", "TEST_F", "TEST_P", "TYPED_TEST", "TYPED_TEST_P", "Test", "START_TEST"})
STRING_TEST_MACROS = frozenset({"TEST_CASE", "SCENARIO", "TEST_CASE_METHOD", "TEMPLATE_TEST_CASE"})

# Nodes whose children are declarations in the same scope.
_TRANSPARENT = {
    "preproc_if",
    "preproc_ifdef",
    "preproc_else",
    "preproc_elif",
    "preproc_elifdef",
    "linkage_specification",
    "declaration_list",
    "template_declaration",
    "friend_declaration",
    "export_declaration",
    "ERROR",  # tree-sitter's recovery node: what parsed inside it is still extracted
}
_CLASSES = {"class_specifier", "struct_specifier", "union_specifier"}
_DECLARATOR_WRAPPERS = {
    "pointer_declarator",
    "reference_declarator",
    "attributed_declarator",
    "parenthesized_declarator",
}


@dataclass(frozen=True)
class _State:
    scope: Scope | None
    in_class: bool


def extract(root: Node, ctx: FileContext) -> Iterator[Found]:
    def visit(child: Node, following: Node | None, state: _State) -> Found | Enter[_State] | None:
        return _visit(child, following, state, ctx)

    return walk(root, _State(None, False), visit)


def _visit(
    child: Node, following: Node | None, state: _State, ctx: FileContext
) -> Found | Enter[_State] | None:
    kind = child.type
    if kind == "function_definition":
        return _function(child, state.scope, state.in_class, ctx)
    if kind in _TRANSPARENT:
        return Enter(child.child_by_field_name("body") or child, state)
    if kind == "namespace_definition":
        return _namespace(child, state.scope, ctx)
    if kind in _CLASSES:
        return _class(child, state.scope, ctx)
    if kind in ("declaration", "field_declaration", "type_definition"):
        spec = child.child_by_field_name("type")
        if spec is not None and spec.type in _CLASSES:
            return _class(spec, state.scope, ctx)
    elif kind == "expression_statement":
        return _string_test(child, following, ctx)
    return None


def _namespace(node: Node, scope: Scope | None, ctx: FileContext) -> Enter[_State] | None:
    name = squash(field_text(node, "name", ctx))  # "" for an anonymous namespace; "a::b" for nested ones
    body = node.child_by_field_name("body")
    if body is None:
        return None
    return Enter(body, _State(enter(scope, name) if name else scope, False))


def _class(node: Node, scope: Scope | None, ctx: FileContext) -> Enter[_State] | None:
    body = node.child_by_field_name("body")
    if body is None:
        return None
    name = squash(field_text(node, "name", ctx)) or "<anonymous>"
    return Enter(body, _State(enter(scope, name), True))


def _function(node: Node, scope: Scope | None, in_class: bool, ctx: FileContext) -> Found | None:
    declarator = _function_declarator(node.child_by_field_name("declarator"))
    if declarator is None or node.child_by_field_name("body") is None:
        return None
    name_node = declarator.child_by_field_name("declarator")
    name = squash(ctx.text(name_node)) or "<unnamed>"
    if name in TEST_MACROS and node.child_by_field_name("type") is None:
        return Found(node, _macro_test_name(declarator, ctx) or name, "test")
    out_of_line = name_node is not None and name_node.type == "qualified_identifier"
    kind = "method" if in_class or out_of_line else "function"
    return Found(node, qualified(scope, name, "::"), kind)


def _function_declarator(node: Node | None) -> Node | None:
    """Unwrap ``*f(...)``, ``&f(...)``, ``(f)(...)`` to the innermost function_declarator.

    Innermost, because a function returning a function pointer, ``int (*get(void))(int)``, nests
    its own declarator inside the one of the type it returns.
    """
    found = None
    while node is not None:
        if node.type == "function_declarator":
            found = node
        elif node.type not in _DECLARATOR_WRAPPERS:
            break
        inner = node.child_by_field_name("declarator")
        node = inner if inner is not None else next(iter(node.named_children), None)
    return found


def _macro_test_name(declarator: Node, ctx: FileContext) -> str:
    params = declarator.child_by_field_name("parameters")
    parts = [squash(ctx.text(p)) for p in params.named_children] if params is not None else []
    return ".".join(p for p in parts if p)


def _string_test(statement: Node, following: Node | None, ctx: FileContext) -> Found | None:
    """Catch2/doctest ``TEST_CASE("name", "[tag]") { ... }``: a call followed by a block."""
    if following is None or following.type != "compound_statement":
        return None
    call = statement.named_children[0] if statement.named_children else None
    if call is None or call.type != "call_expression":
        return None
    if field_text(call, "function", ctx) not in STRING_TEST_MACROS:
        return None
    args = call.child_by_field_name("arguments")
    strings = [a for a in (args.named_children if args is not None else []) if a.type == "string_literal"]
    name = ctx.text(strings[0]).strip('"') if strings else field_text(call, "function", ctx)
    return Found(statement, name, "test", end_node=following)
