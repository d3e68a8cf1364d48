"""The four default tasks, one builder each (registry), from the shared function pools."""

from __future__ import annotations

import ast
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtpeft.data.default_suite.mutations import FunctionNode, apply_mutation, candidates, first_mutant
from mtpeft.data.default_suite.rewrites import clone_of
from mtpeft.data.default_suite.sources import Function, HumanEvalProblem, humaneval_functions
from mtpeft.data.default_suite.splits import SPLITS, by_split, rng_for, seeded_order
from mtpeft.data.default_suite.verify import CheckJob, run_checks
from mtpeft.data.default_suite.writers import (
    ClonePair,
    DefectRecord,
    write_bigclonebench,
    write_codesearchnet,
    write_devign,
)
from mtpeft.data.inspect import normalise_code

# (train, valid, test) per task at full size; --max-per-task N caps train at N and valid/test at N // 5.
DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "py-search": (3000, 400, 400),
    "py-defect": (2000, 300, 300),
    "py-clone": (2000, 300, 300),
    "py-summarize": (3000, 400, 400),
}
HUMANEVAL_SHARE = 0.25  # at most this share of py-defect functions per split come from HumanEval
HUMANEVAL_SPARE = 2  # extra problems tried per split, for those whose mutants all survive the tests
MUTANT_TRIES = 6  # mutants tried per HumanEval problem before it is dropped
CLONE_MAX_TOKENS = 200  # both halves of a pair must fit one model input
NEIGHBOUR_STEPS = 12  # how far along the length order a hard negative may be looked for


@dataclass
class SuiteContext:
    seed: int
    max_per_task: int | None
    functions: dict[str, list[Function]]  # stdlib, deduplicated, per split
    documented: dict[str, list[Function]]  # the subset with a usable one-line summary
    humaneval: tuple[HumanEvalProblem, ...]

    def targets(self, task: str) -> dict[str, int]:
        sizes = dict(zip(SPLITS, DEFAULT_SIZES[task], strict=True))
        if self.max_per_task is None:
            return sizes
        caps = {"train": self.max_per_task, "valid": self.max_per_task // 5, "test": self.max_per_task // 5}
        return {s: min(sizes[s], caps[s]) for s in SPLITS}


@dataclass
class TaskResult:
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)  # facts for SOURCE.md (deterministic only)
    volatile: dict[str, float] = field(default_factory=dict)  # facts that vary by machine: logged only


TaskBuilder = Callable[[SuiteContext, Path], TaskResult]
TASK_BUILDERS: dict[str, TaskBuilder] = {}


def task_builder(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    def register(fn: TaskBuilder) -> TaskBuilder:
        TASK_BUILDERS[name] = fn
        return fn

    return register


def _key(f: Function) -> str:
    return f.key


# ---------------------------------------------------------------------------------------------------
# py-search and py-summarize: (first docstring line, function without docstring), CodeSearchNet format


def _build_documented(ctx: SuiteContext, folder: Path, task: str, note: str) -> TaskResult:
    targets = ctx.targets(task)
    sample = {s: seeded_order(ctx.documented[s], _key, ctx.seed, task)[: targets[s]] for s in SPLITS}
    write_codesearchnet(folder, sample)
    return TaskResult({s: len(v) for s, v in sample.items()}, [note])


@task_builder("py-search")
def build_search(ctx: SuiteContext, folder: Path) -> TaskResult:
    return _build_documented(ctx, folder, "py-search", "query = first docstring line; candidate = code")


@task_builder("py-summarize")
def build_summarize(ctx: SuiteContext, folder: Path) -> TaskResult:
    return _build_documented(ctx, folder, "py-summarize", "source = code; target = first docstring line")


# ---------------------------------------------------------------------------------------------------
# py-defect: each function and one mutant of it, in the same split


@dataclass
class _HumanEvalTrial:
    problem: HumanEvalProblem
    function: Function
    pending: Iterator[tuple[str, FunctionNode]]
    accepted: tuple[str, FunctionNode] | None = None


def _program_with(problem: HumanEvalProblem, node: FunctionNode) -> str:
    """The problem's program (imports, helpers) with its entry point replaced by `node`."""
    tree = ast.parse(problem.program)
    tree.body = [node if getattr(s, "name", None) == problem.entry_point else s for s in tree.body]
    return ast.unparse(tree)


def _mutants(func: Function, seed: int) -> Iterator[tuple[str, FunctionNode]]:
    original = ast.unparse(func.node)
    for operator, site in candidates(func.node, rng_for(seed, "py-defect", func.key))[:MUTANT_TRIES]:
        mutant = apply_mutation(func.node, operator, site)
        if ast.unparse(mutant) != original:
            yield operator, mutant


def _job(trial: _HumanEvalTrial, node: FunctionNode, key: str) -> CheckJob:
    p = trial.problem
    return CheckJob(key, _program_with(p, node), p.test, p.entry_point)


def _verified_humaneval(
    ctx: SuiteContext, quota: dict[str, int]
) -> tuple[dict[str, list[_HumanEvalTrial]], Counter]:
    """Per split, HumanEval problems with a mutant that FAILS the shipped tests (survivors are
    equivalent mutants and are dropped). Trials run in rounds so two workers stay busy."""
    functions = {f.key: f for f in humaneval_functions(ctx.humaneval)}
    trials: dict[str, list[_HumanEvalTrial]] = {}
    problems = by_split(ctx.humaneval, lambda p: p.task_id, ctx.seed)  # each task id is its own group
    for split in SPLITS:
        ordered = seeded_order(problems[split], lambda p: p.task_id, ctx.seed, "py-defect")
        trials[split] = [
            _HumanEvalTrial(p, functions[p.task_id], _mutants(functions[p.task_id], ctx.seed))
            for p in ordered[: quota[split] + HUMANEVAL_SPARE if quota[split] else 0]
        ]
    everyone = [t for split in SPLITS for t in trials[split]]
    stats: Counter = Counter()
    # The canonical solution must pass as rendered here, or the problem is left out.
    outcomes = run_checks([_job(t, t.function.node, t.problem.task_id) for t in everyone])
    open_trials = [t for t, o in zip(everyone, outcomes, strict=True) if o.passed]
    stats["canonical_failed"] = len(everyone) - len(open_trials)
    while open_trials:
        batch = [(t, next(t.pending, None)) for t in open_trials]
        batch = [(t, m) for t, m in batch if m is not None]
        outcomes = run_checks([_job(t, node, f"{t.problem.task_id}:{op}") for t, (op, node) in batch])
        for (trial, mutant), outcome in zip(batch, outcomes, strict=True):
            stats["timed_out"] += outcome.timed_out
            if outcome.passed:
                stats["equivalent_dropped"] += 1
            else:
                trial.accepted = mutant
        open_trials = [t for t, _ in batch if t.accepted is None]
    stats["no_failing_mutant"] = sum(1 for t in everyone if t.accepted is None) - stats["canonical_failed"]
    return {s: [t for t in trials[s] if t.accepted is not None][: quota[s]] for s in SPLITS}, stats


class _DefectRecords:
    """Original/mutant record pairs of one split, skipping any code already used (no duplicates, and
    so no code with two labels)."""

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen
        self.records: list[DefectRecord] = []
        self.operators: Counter = Counter()

    def add(
        self,
        project: str,
        key: str,
        original: FunctionNode,
        mutant: FunctionNode,
        operator: str,
        verified: bool,
    ) -> None:
        code, bug = ast.unparse(original), ast.unparse(mutant)
        keys = {normalise_code(code), normalise_code(bug)}
        if keys & self.seen:
            return
        self.seen |= keys
        status = "verified" if verified else "unverified"
        self.records += [
            DefectRecord(project, f"{key}:original", 0, code),
            DefectRecord(project, f"{key}:{operator}:{status}", 1, bug),
        ]
        self.operators[operator] += 1


@task_builder("py-defect")
def build_defect(ctx: SuiteContext, folder: Path) -> TaskResult:
    n_functions = {s: n // 2 for s, n in ctx.targets("py-defect").items()}
    humaneval, stats = _verified_humaneval(
        ctx, {s: math.ceil(n * HUMANEVAL_SHARE) for s, n in n_functions.items()}
    )
    seen: set[str] = set()
    operators: Counter = Counter()
    splits: dict[str, list[DefectRecord]] = {}
    for split in SPLITS:
        pairs = _DefectRecords(seen)
        for trial in humaneval[split]:
            operator, node = trial.accepted
            pairs.add("humaneval", trial.problem.task_id, trial.function.node, node, operator, verified=True)
        for func in seeded_order(ctx.functions[split], _key, ctx.seed, "py-defect"):
            if len(pairs.records) >= 2 * n_functions[split]:
                break
            found = first_mutant(func.node, rng_for(ctx.seed, "py-defect", func.key))
            if found is not None:  # stdlib code cannot be run: its mutants stay unverified
                pairs.add(func.group, func.key, func.node, found[1], found[0], verified=False)
        splits[split] = seeded_order(pairs.records, lambda r: r.commit_id, ctx.seed, "py-defect", "order")
        operators += pairs.operators
    write_devign(folder, splits)
    n_verified = sum(r.project == "humaneval" for records in splits.values() for r in records) // 2
    notes = [
        f"HumanEval functions: {n_verified} (mutant verified by running the shipped tests; "
        f"{stats['equivalent_dropped']} equivalent mutants dropped, "
        f"{stats['no_failing_mutant']} problems without a failing mutant in {MUTANT_TRIES} tries)",
        "mutation operators used: " + ", ".join(f"{k} {v}" for k, v in sorted(operators.items())),
    ]
    counts = {s: len(v) for s, v in splits.items()}
    return TaskResult(counts, notes, {"humaneval_timeouts": stats["timed_out"]})


# ---------------------------------------------------------------------------------------------------
# py-clone: (function, rewrite of it) = 1; (function, rewrite of a different function of similar length) = 0


class _CloneSource:
    """Rendered code and a rewrite per function, computed once (rewrites are the slow part)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rewrites: dict[str, tuple[list[str], str] | None] = {}

    def rewrite(self, func: Function) -> tuple[list[str], str] | None:
        if func.key not in self._rewrites:
            found = clone_of(func.node, rng_for(self.seed, "py-clone", func.key))
            self._rewrites[func.key] = (found[0], ast.unparse(found[1])) if found else None
        return self._rewrites[func.key]


def _neighbour(
    func: Function, by_length: list[Function], position: dict[str, int], source: _CloneSource, seed: int
) -> tuple[Function, str] | None:
    """The function nearest in token length (either side, order chosen at random) with a rewrite."""
    here = position[func.key]
    sides = [-1, 1]
    rng_for(seed, "py-clone", "neighbour", func.key).shuffle(sides)
    own = normalise_code(ast.unparse(func.node))
    for step in range(1, NEIGHBOUR_STEPS + 1):
        for side in sides:
            i = here + side * step
            if 0 <= i < len(by_length):
                other = by_length[i]
                found = source.rewrite(other)
                if found and normalise_code(found[1]) != own:
                    return other, found[1]
    return None


def _clone_split(
    pool: list[Function], n_pairs: int, seen: set[str], source: _CloneSource, seed: int
) -> tuple[list[ClonePair], Counter]:
    by_length = sorted(pool, key=lambda f: (f.n_tokens, f.key))
    position = {f.key: i for i, f in enumerate(by_length)}
    positives: list[ClonePair] = []
    negatives: list[ClonePair] = []
    kinds: Counter = Counter()
    for func in seeded_order(pool, _key, seed, "py-clone"):
        if len(positives) >= n_pairs // 2 and len(negatives) >= n_pairs // 2:
            break
        code = ast.unparse(func.node)
        if normalise_code(code) in seen:
            continue
        want_positive = len(positives) < n_pairs // 2
        found = source.rewrite(func) if want_positive else None
        if want_positive and found:
            positives.append(ClonePair(code, found[1], 1))
            kinds.update(found[0])
        elif not want_positive and (neighbour := _neighbour(func, by_length, position, source, seed)):
            negatives.append(ClonePair(code, neighbour[1], 0))
        else:
            continue
        seen.add(normalise_code(code))
    n = min(len(positives), len(negatives))  # keep the 50/50 balance when the pool runs short
    pairs = []
    for pair in positives[:n] + negatives[:n]:  # random side for the rewritten half
        flip = rng_for(seed, "py-clone", "side", pair.code_a).random() < 0.5
        pairs.append(ClonePair(pair.code_b, pair.code_a, pair.label) if flip else pair)
    return seeded_order(pairs, lambda p: p.code_a + "\x00" + p.code_b, seed, "py-clone", "order"), kinds


@task_builder("py-clone")
def build_clone(ctx: SuiteContext, folder: Path) -> TaskResult:
    targets = ctx.targets("py-clone")
    source = _CloneSource(ctx.seed)
    seen: set[str] = set()
    splits: dict[str, list[ClonePair]] = {}
    kinds: Counter = Counter()
    for split in SPLITS:
        pool = [f for f in ctx.functions[split] if f.n_tokens <= CLONE_MAX_TOKENS]
        splits[split], split_kinds = _clone_split(pool, targets[split], seen, source, ctx.seed)
        kinds += split_kinds
    write_bigclonebench(folder, splits)
    notes = [
        "rewrite kinds in clone pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        "negatives: the other half is the rewrite of the function nearest in token length in the same split",
        f"functions of at most {CLONE_MAX_TOKENS} regex tokens",
    ]
    return TaskResult({s: len(v) for s, v in splits.items()}, notes)
