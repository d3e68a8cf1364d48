"""Bug injection: AST mutation operators (one small bug each), kept in a registry.

Hand-written: mutation-testing tools (mutmut, cosmic-ray) mutate files on disk and drive test runners;
we need one in-memory mutant of one function node, so a few NodeVisitor-style operators suffice.
An operator finds its *sites* in a function; a site is a closure that edits the (copied) tree in place.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Callable, Iterator

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
Site = Callable[[], None]
SiteFinder = Callable[[FunctionNode], list[Site]]

MUTATIONS: dict[str, SiteFinder] = {}


def mutation(name: str) -> Callable[[SiteFinder], SiteFinder]:
    def register(finder: SiteFinder) -> SiteFinder:
        MUTATIONS[name] = finder
        return finder

    return register


def _body_nodes(func: FunctionNode) -> Iterator[ast.AST]:
    """Nodes of the body only: decorators, annotations and defaults stay as they are."""
    for stmt in func.body:
        yield from ast.walk(stmt)


def _swap_attr(node: ast.AST, attr: str, new: ast.AST) -> Site:
    return lambda: setattr(node, attr, new)


# Boundary and polarity flips, the classic relational-operator-replacement set.
_COMPARE_SWAP: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}  # fmt: skip
_ARITH_SWAP: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult, ast.Mod: ast.FloorDiv,
}  # fmt: skip


@mutation("compare_swap")
def _compare_swap(func: FunctionNode) -> list[Site]:
    sites = []
    for node in _body_nodes(func):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAP:
                    sites.append(lambda ops=node.ops, i=i: ops.__setitem__(i, _COMPARE_SWAP[type(ops[i])]()))
    return sites


@mutation("off_by_one")
def _off_by_one(func: FunctionNode) -> list[Site]:
    return [
        _swap_attr(node, "value", node.value + 1)
        for node in _body_nodes(func)
        if isinstance(node, ast.Constant) and type(node.value) is int
    ]


@mutation("and_or_swap")
def _and_or_swap(func: FunctionNode) -> list[Site]:
    return [
        _swap_attr(node, "op", ast.Or() if isinstance(node.op, ast.And) else ast.And())
        for node in _body_nodes(func)
        if isinstance(node, ast.BoolOp)
    ]


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


@mutation("arith_swap")
def _arith_swap(func: FunctionNode) -> list[Site]:
    sites = []
    for node in _body_nodes(func):
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _ARITH_SWAP:
            operands = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.value,)
            if not any(_is_text(x) for x in operands):  # "a" - b and "%s" // x are not realistic bugs
                sites.append(_swap_attr(node, "op", _ARITH_SWAP[type(node.op)]()))
    return sites


def _negated(value: ast.expr) -> ast.expr:
    if isinstance(value, ast.Constant):
        return ast.Constant(not value.value)
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
        return value.operand
    return ast.UnaryOp(ast.Not(), value)


def _is_boolean(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Constant):
        return isinstance(value.value, bool)
    return isinstance(value, (ast.Compare, ast.BoolOp)) or (
        isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not)
    )


@mutation("negate_return")
def _negate_return(func: FunctionNode) -> list[Site]:
    return [
        _swap_attr(node, "value", _negated(node.value))
        for node in _body_nodes(func)
        if isinstance(node, ast.Return) and _is_boolean(node.value)
    ]


_KEEP_STATEMENTS = (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Global, ast.Nonlocal)


@mutation("delete_statement")
def _delete_statement(func: FunctionNode) -> list[Site]:
    sites = []
    for node in [func, *_body_nodes(func)]:
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if not isinstance(block, list) or len(block) < 2:
                continue  # deleting the only statement would leave invalid code
            for stmt in block:
                docstring = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                if not docstring and not isinstance(stmt, _KEEP_STATEMENTS):
                    sites.append(lambda block=block, stmt=stmt: block.remove(stmt))
    return sites


def candidates(func: FunctionNode, rng: random.Random) -> list[tuple[str, int]]:
    """(operator, site index) pairs in trial order: operators round-robin in a random order, so each
    operator gets its turn before any is tried twice; sites shuffled within an operator."""
    per_operator = []
    for name in sorted(MUTATIONS):
        indices = list(range(len(MUTATIONS[name](func))))
        rng.shuffle(indices)
        if indices:
            per_operator.append([(name, i) for i in indices])
    rng.shuffle(per_operator)
    order = []
    for round_ in range(max((len(ops) for ops in per_operator), default=0)):
        order.extend(ops[round_] for ops in per_operator if round_ < len(ops))
    return order


def apply_mutation(func: FunctionNode, operator: str, site: int) -> FunctionNode:
    """A mutated deep copy; the input node is never changed (it is shared by every task builder)."""
    mutant = copy.deepcopy(func)
    MUTATIONS[operator](mutant)[site]()
    return ast.fix_missing_locations(mutant)


def first_mutant(func: FunctionNode, rng: random.Random) -> tuple[str, FunctionNode] | None:
    """The first candidate whose code differs from the original (e.g. `not not x` would not)."""
    original = ast.unparse(func)
    for operator, site in candidates(func, rng):
        mutant = apply_mutation(func, operator, site)
        if ast.unparse(mutant) != original:
            return operator, mutant
    return None
