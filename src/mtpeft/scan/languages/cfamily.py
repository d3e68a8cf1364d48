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

from tree_sitter import Node

from mtpeft.scan.languages.base import FileContext, Found, field_text, squash

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


def extract(root: Node, ctx: FileContext) -> Iterator[Found]:
    yield from _walk(root, (), False, ctx)


def _walk(node: Node, scope: tuple[str, ...], in_class: bool, ctx: FileContext) -> Iterator[Found]:
    children = node.named_children
    for index, child in enumerate(children):
        kind = child.type
        if kind == "function_definition":
            found = _function(child, scope, in_class, ctx)
            if found is not None:
                yield found
        elif kind in _TRANSPARENT:
            yield from _walk(child.child_by_field_name("body") or child, scope, in_class, ctx)
        elif kind == "namespace_definition":
            yield from _namespace(child, scope, ctx)
        elif kind in _CLASSES:
            yield from _class(child, scope, ctx)
        elif kind in ("declaration", "field_declaration", "type_definition"):
            spec = child.child_by_field_name("type")
            if spec is not None and spec.type in _CLASSES:
                yield from _class(spec, scope, ctx)
        elif kind == "expression_statement":
            found = _string_test(child, children[index + 1] if index + 1 < len(children) else None, ctx)
            if found is not None:
                yield found


def _namespace(node: Node, scope: tuple[str, ...], ctx: FileContext) -> Iterator[Found]:
    name = squash(field_text(node, "name", ctx))  # "" for an anonymous namespace; "a::b" for nested ones
    body = node.child_by_field_name("body")
    if body is not None:
        yield from _walk(body, (*scope, name) if name else scope, False, ctx)


def _class(node: Node, scope: tuple[str, ...], ctx: FileContext) -> Iterator[Found]:
    body = node.child_by_field_name("body")
    if body is not None:
        name = squash(field_text(node, "name", ctx)) or "<anonymous>"
        yield from _walk(body, (*scope, name), True, ctx)


def _function(node: Node, scope: tuple[str, ...], in_class: bool, ctx: FileContext) -> Found | None:
    declarator = _function_declarator(node.child_by_field_name("declarator"))
    if declarator is None or node.child_by_field_name("body") is None:
        return None
    name_node = declarator.child_by_field_name("declarator")
    name = squash(ctx.text(name_node)) or "<unnamed>"
    if name in TEST_MACROS and node.child_by_field_name("type") is None:
        return Found(node, _macro_test_name(declarator, ctx) or name, "test")
    qualified = name_node is not None and name_node.type == "qualified_identifier"
    kind = "method" if in_class or qualified else "function"
    return Found(node, "::".join((*scope, name)), kind)


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
