"""Semantics-preserving rewrites for clone pairs (type-2/3 clones), kept in a registry.

Hand-written: no installed library rewrites Python ASTs this way; scoping questions are answered by the
standard `symtable` module so renaming never captures or shadows a name.
Every function is rendered with `ast.unparse` (originals too), so layout never gives a clone away.
"""

from __future__ import annotations

import ast
import builtins
import copy
import keyword
import random
import symtable
from collections.abc import Callable

from mtpeft.data.default_suite.mutations import FunctionNode

Rewrite = Callable[[FunctionNode, random.Random], bool]  # edits in place; True when anything changed

REWRITES: dict[str, Rewrite] = {}

# Plausible replacement names, so renamed code does not look machine-made.
_NAMES = (
    "value", "item", "result", "data", "node", "name", "count", "index", "key", "entry", "obj", "text",
    "parts", "size", "total", "current", "other", "target", "source", "buf", "flag", "pos", "rest",
    "first", "last", "elem", "tmp", "res", "out", "acc", "cur", "val", "arg", "part", "chunk", "line",
    "word", "seq", "items", "values", "pair", "head", "tail", "left", "right", "start", "stop", "step",
    "base", "limit", "state", "info", "spec", "token",
)  # fmt: skip
_KEEP = frozenset({"self", "cls", "_"})
_DYNAMIC_SCOPE = frozenset({"locals", "vars", "eval", "exec", "globals"})  # name lookups by string


def rewrite(name: str) -> Callable[[Rewrite], Rewrite]:
    def register(fn: Rewrite) -> Rewrite:
        REWRITES[name] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------------
# rename: consistent renaming of parameters and local variables


def _tables(table: symtable.SymbolTable) -> list[symtable.SymbolTable]:
    out = [table]
    for child in table.get_children():
        out.extend(_tables(child))
    return out


def _renamable(func: FunctionNode) -> list[str]:
    """Locals of `func` that can be renamed: in every nested scope they are local or refer back to
    `func`'s binding, never a global; not imports, nested defs, keywords passed to calls or dunders."""
    module = symtable.symtable(ast.unparse(func), "<function>", "exec")
    top = module.get_children()[0]
    nested = _tables(top)[1:]
    keywords = {kw.arg for node in ast.walk(func) if isinstance(node, ast.Call) for kw in node.keywords}
    names = []
    for name in top.get_identifiers():
        sym = top.lookup(name)
        if not sym.is_local() or sym.is_imported() or sym.is_namespace():
            continue
        if name in _KEEP or name in keywords or name.startswith("__"):
            continue
        if any(
            name in t.get_identifiers()
            and (t.get_type() == "class" or t.lookup(name).is_global() or t.lookup(name).is_imported())
            for t in nested
        ):
            continue
        names.append(name)
    return sorted(names)


def _all_identifiers(func: FunctionNode) -> set[str]:
    found = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.alias):
            found.add((node.asname or node.name).split(".")[0])
    return found


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.mapping.get(node.arg, node.arg)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        if node.name:
            node.name = self.mapping.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.Nonlocal:
        node.names = [self.mapping.get(n, n) for n in node.names]
        return node


@rewrite("rename")
def _rename(func: FunctionNode, rng: random.Random) -> bool:
    uses = {n.func.id for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    if uses & _DYNAMIC_SCOPE or any(isinstance(n, (ast.MatchAs, ast.MatchStar)) for n in ast.walk(func)):
        return False
    old_names = _renamable(func)
    taken = _all_identifiers(func) | set(dir(builtins)) | set(keyword.kwlist)
    fresh = [n for n in _NAMES if n not in taken]
    rng.shuffle(fresh)
    mapping = {}
    for i, old in enumerate(old_names):
        mapping[old] = fresh[i] if i < len(fresh) else f"v{i}"
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return False
    _Renamer(mapping).visit(func)
    return True


# ---------------------------------------------------------------------------------------------------
# if_swap: `if c: A else: B`  ->  `if not c: B else: A`

# Only the exact inverses; `<` vs `>=` differ for NaN, so ordering tests are wrapped in `not` instead.
_INVERSE = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
            ast.IsNot: ast.Is}  # fmt: skip


def _negate(test: ast.expr) -> ast.expr:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _INVERSE:
        return ast.Compare(test.left, [_INVERSE[type(test.ops[0])]()], test.comparators)
    return ast.UnaryOp(ast.Not(), test)


@rewrite("if_swap")
def _if_swap(func: FunctionNode, rng: random.Random) -> bool:
    changed = False
    for node in ast.walk(func):
        if isinstance(node, ast.If) and node.orelse and rng.random() < 0.7:
            node.test = _negate(node.test)
            node.body, node.orelse = node.orelse, node.body
            changed = True
    return changed


# ---------------------------------------------------------------------------------------------------
# compare_flip: `a < b`  ->  `b > a` (only simple operands, so evaluation order cannot matter)

_MIRROR = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.Eq,
           ast.NotEq: ast.NotEq}  # fmt: skip


def _simple(node: ast.expr) -> bool:
    return isinstance(node, (ast.Name, ast.Constant)) or (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    )


@rewrite("compare_flip")
def _compare_flip(func: FunctionNode, rng: random.Random) -> bool:
    changed = False
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and type(node.ops[0]) in _MIRROR
            and _simple(node.left)
            and _simple(node.comparators[0])
            and not isinstance(node.left, ast.Constant)  # `x == 0` -> `0 == x` reads unnatural
        ):
            node.left, node.comparators = node.comparators[0], [node.left]
            node.ops = [_MIRROR[type(node.ops[0])]()]
            changed = True
    return changed


def clone_of(func: FunctionNode, rng: random.Random) -> tuple[list[str], FunctionNode] | None:
    """A rewritten deep copy: each applicable kind with probability 0.6, at least one that changes the
    code; (kinds applied, node), or None when no rewrite applies."""
    original = ast.unparse(func)
    order = sorted(REWRITES)
    rng.shuffle(order)
    chosen = [name for name in order if rng.random() < 0.6] or order[:1]
    for attempt in (chosen, order):  # fall back to every kind when the chosen ones do not apply
        clone = copy.deepcopy(func)
        applied = [name for name in attempt if REWRITES[name](clone, rng)]
        if applied and ast.unparse(clone) != original:
            return sorted(applied), ast.fix_missing_locations(clone)
    return None
