"""`build_default` / `mtpeft data build-default`: deterministic, leak-free, loadable, labels that hold."""

from __future__ import annotations

import ast
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtpeft.cli.main import app
from mtpeft.data.default_suite import TASK_BUILDERS, build_default
from mtpeft.data.default_suite.mutations import MUTATIONS, apply_mutation
from mtpeft.data.default_suite.rewrites import REWRITES, clone_of
from mtpeft.data.default_suite.sources import humaneval_functions, humaneval_problems
from mtpeft.data.default_suite.tasks import _program_with
from mtpeft.data.default_suite.verify import CheckJob, run_check, run_checks
from mtpeft.data.formats.base import load_split
from mtpeft.data.inspect import inspect_task
from mtpeft.errors import ConfigError
from mtpeft.tasks import get_task

SPLITS = ("train", "valid", "test")
MAX = 30  # 30 train and 6 valid/test per task: the whole build takes a few seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("default") / "suite"
    return out, build_default(out, seed=13, max_per_task=MAX)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(built, tmp_path):
    out, counts = built
    assert build_default(tmp_path / "again", seed=13, max_per_task=MAX) == counts
    assert files(tmp_path / "again") == files(out)
    build_default(tmp_path / "other", seed=14, max_per_task=MAX)
    assert files(tmp_path / "other")["py-defect/train.jsonl"] != files(out)["py-defect/train.jsonl"]


def test_every_task_loads_through_its_reader_with_the_requested_sizes(built):
    out, counts = built
    assert set(counts) == set(TASK_BUILDERS) == {"py-search", "py-defect", "py-clone", "py-summarize"}
    for name in counts:
        for split in SPLITS:
            examples = load_split(get_task(name), out / name, split)
            assert len(examples) == counts[name][split] == (MAX if split == "train" else MAX // 5)
    source = (out / "SOURCE.md").read_text()
    assert "PSF" in source and "MIT" in source and "Seed 13" in source and "unverified" in source


@pytest.mark.parametrize("name", ["py-defect", "py-clone"])
def test_labels_are_balanced(built, name):
    out, _ = built
    for split in SPLITS:
        labels = Counter(ex.label for ex in load_split(get_task(name), out / name, split))
        assert labels[0] == labels[1] > 0


def test_no_duplicates_leakage_or_label_conflicts(built):
    out, _ = built
    for name in TASK_BUILDERS:
        summary = inspect_task(get_task(name), out / name).summary()
        assert summary["leakage"] == 0, name
        assert summary["conflicts"] in (0, None), name
        assert all(s["duplicate_rate"] == 0 for s in summary["splits"].values()), name


def _modules(out: Path, task: str, split: str) -> set[str]:
    examples = load_split(get_task(task), out / task, split)
    if task == "py-defect":  # project is the module; HumanEval is split by task id instead
        return {
            ex.group if ex.group != "humaneval" else ex.meta["commit_id"].split(":")[0] for ex in examples
        }
    return {ex.meta["url"].removeprefix("stdlib/").rsplit(".", 1)[0] for ex in examples}


def test_splits_are_disjoint_by_module_across_all_tasks(built):
    out, _ = built
    modules = {
        s: set().union(*(_modules(out, t, s) for t in ("py-defect", "py-search", "py-summarize")))
        for s in SPLITS
    }
    assert not modules["train"] & modules["valid"]
    assert not modules["train"] & modules["test"]
    assert not modules["valid"] & modules["test"]
    assert any(m.startswith("HumanEval/") for m in modules["train"])


def test_humaneval_mutants_fail_their_tests_and_originals_pass(built):
    out, _ = built
    problems = {p.task_id: p for p in humaneval_problems()}
    records = [
        json.loads(line)
        for split in SPLITS
        for line in (out / "py-defect" / f"{split}.jsonl").read_text().splitlines()
    ]
    humaneval = [r for r in records if r["project"] == "humaneval"]
    mutants = [r for r in humaneval if r["target"] == 1]
    assert mutants and all(r["commit_id"].endswith(":verified") for r in mutants)
    jobs = []
    for r in humaneval[:4]:
        problem = problems[r["commit_id"].split(":")[0]]
        node = ast.parse(r["func"]).body[0]
        jobs.append(CheckJob(r["commit_id"], _program_with(problem, node), problem.test, problem.entry_point))
    outcomes = run_checks(jobs)
    assert [o.passed for o in outcomes] == [r["target"] == 0 for r in humaneval[:4]]


def test_clone_pairs_have_both_labels_and_positives_are_real_rewrites(built):
    out, _ = built
    examples = load_split(get_task("py-clone"), out / "py-clone", "train")
    assert {ex.label for ex in examples} == {0, 1}
    for ex in examples:
        assert ex.code != ex.code_b
        ast.parse(ex.code), ast.parse(ex.code_b)
        if ex.label == 1:  # a rewrite keeps the function's name and size
            assert ex.code.split("(")[0] == ex.code_b.split("(")[0]


SAMPLE = """
def sample(items, limit=3):
    total = 0
    for item in items:
        if item > limit and item != 7:
            total += item * 2
        else:
            total -= 1
    if total < 0:
        return False
    return total
"""
INPUTS = ([1, 3, 5, 9], [1, 2], [7, 4, 4], [4] + [1] * 8)


def behaviour(func: ast.FunctionDef) -> list:
    """Results (or exception names) on a few inputs, with the default and another limit."""
    scope: dict = {}
    exec(compile(ast.Module([func], []), "<sample>", "exec"), scope)  # noqa: S102 - our own sample
    results = []
    for items in INPUTS:
        for args in ((items,), (items, 6)):
            try:
                results.append(repr(scope[func.name](*args)))  # repr: False must differ from 0
            except Exception as err:  # a deleted statement may leave a name unbound
                results.append(type(err).__name__)
    return results


def test_every_mutation_operator_changes_behaviour_on_a_sample():
    func = ast.parse(SAMPLE).body[0]
    original = behaviour(func)
    for name, finder in MUTATIONS.items():
        sites = finder(func)
        assert sites, name
        assert all(behaviour(apply_mutation(func, name, i)) != original for i in range(len(sites))), name
    assert ast.unparse(func) == ast.unparse(ast.parse(SAMPLE).body[0])  # the input is never modified


def test_rewrites_preserve_behaviour_and_respect_scoping():
    func = ast.parse(SAMPLE).body[0]
    for seed in range(5):
        kinds, clone = clone_of(func, random.Random(seed))
        assert set(kinds) <= set(REWRITES)
        assert ast.unparse(clone) != ast.unparse(func)
        assert behaviour(clone) == behaviour(func)
    helper = ast.parse(
        "def f(n):\n    size = len(n)\n    return f(n=size - 1) if size else helper(n)\n"
    ).body[0]
    assert REWRITES["rename"](helper, random.Random(0))
    renamed = ast.unparse(helper)
    assert "size" not in renamed  # the local is renamed; globals, builtins and keywords are not
    assert "f(n=" in renamed and "helper(" in renamed and "len(" in renamed


def test_rewrites_of_humaneval_solutions_still_pass_their_tests():
    problems = humaneval_problems()[:6]
    jobs = []
    for problem, func in zip(problems, humaneval_functions(problems), strict=True):
        found = clone_of(func.node, random.Random(1))
        if found:
            jobs.append(
                CheckJob(problem.task_id, _program_with(problem, found[1]), problem.test, problem.entry_point)
            )
    assert len(jobs) >= 4
    assert all(o.passed for o in run_checks(jobs))


def test_a_hanging_program_times_out_as_failing():
    outcome = run_check(
        CheckJob("loop", "def f():\n    while True:\n        pass", "def check(c):\n    c()", "f"), 0.5
    )
    assert outcome.timed_out and not outcome.passed


def test_too_small_max_per_task_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 10"):
        build_default(tmp_path, max_per_task=4)


def test_cli_build_default(tmp_path):
    result = CliRunner().invoke(app, ["data", "build-default", str(tmp_path / "s"), "--max-per-task", "10"])
    assert result.exit_code == 0, result.output
    assert "py-clone" in result.output and "built in" in result.output
    assert (tmp_path / "s" / "py-clone" / "data.jsonl").is_file()
    bad = CliRunner().invoke(app, ["data", "build-default", str(tmp_path / "t"), "--max-per-task", "3"])
    assert bad.exit_code == 2 and not (tmp_path / "t").exists()
