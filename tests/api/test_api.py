"""`mtpeft.load(RUN_DIR)`: what a user of the Python API sees, checked against `mtpeft evaluate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtpeft import layout
from mtpeft.errors import InputError, MtpeftError

SHORT = ["int f ( ) { return 1 ; }", "x = 1", "def g(a):\n    return a", "while True:\n    pass"]


@pytest.fixture
def encoded_rows(run):
    """Rows (sequences) the backbone encoded since the test started: one row = one snippet pass."""
    rows: list[int] = []
    handle = run.model.backbone.register_forward_hook(
        lambda _m, _a, kw, _o: rows.append(len(kw["input_ids"])), with_kwargs=True
    )
    yield rows
    handle.remove()


@pytest.fixture(scope="module")
def evaluated(run_dir: Path) -> dict[str, dict]:
    """Run evaluate_run (what `mtpeft evaluate` calls) once, keeping the head outputs each task scored."""
    from mtpeft.evaluation.run_eval import evaluate_run
    from mtpeft.tasks.kinds.classification import ClassificationKind
    from mtpeft.tasks.kinds.retrieval import RetrievalKind

    captured: dict[str, dict] = {}
    with pytest.MonkeyPatch.context() as patch:
        for cls in (ClassificationKind, RetrievalKind):
            original = cls.score

            def score(self, spec, outputs, examples, _original=original):
                captured[spec.name] = {k: np.asarray(v) for k, v in outputs.items()}
                return _original(self, spec, outputs, examples)

            patch.setattr(cls, "score", score)
        evaluate_run(run_dir, "test", baselines=False, progress=False)
    return captured


def _test_examples(run_dir: Path) -> dict[str, list]:
    from mtpeft.modeling.task_data import resolve_tasks

    config = layout.load_run_config(run_dir)
    return {name: task.examples("test", seed=config.seed) for name, task in resolve_tasks(config).items()}


def test_analyze_gives_the_labels_and_probabilities_of_mtpeft_evaluate(run, run_dir, evaluated):
    examples = _test_examples(run_dir)
    files = layout.predictions_dir(run_dir, "test")
    vuln, complexity = examples["vulnerability"], examples["complexity"]

    # Both one-snippet tasks for every snippet of both test sets, in ONE call (one pass per snippet).
    answers = run.analyze([e.code for e in vuln + complexity])
    assert all(set(a) == {"vulnerability", "complexity"} for a in answers)

    official = dict(
        line.split("\t") for line in (files / "vulnerability.predictions.txt").read_text().splitlines()
    )
    ours = answers[: len(vuln)]
    assert [a["vulnerability"]["label"] for a in ours] == [official[e.id] for e in vuln]
    assert len(set(official.values())) == 2, "the tiny run should split the test set for this check to bite"
    probabilities = [[a["vulnerability"]["probabilities"][label] for label in ("0", "1")] for a in ours]
    np.testing.assert_allclose(probabilities, evaluated["vulnerability"]["probs"], atol=1e-5, rtol=0)

    rows = [json.loads(line) for line in (files / "complexity.predictions.jsonl").read_text().splitlines()]
    ours = answers[len(vuln) :]
    assert [a["complexity"]["label"] for a in ours] == [r["y_pred"] for r in rows]
    assert len({r["y_pred"] for r in rows}) > 1
    labels = run.tasks["complexity"].labels
    probabilities = [[a["complexity"]["probabilities"][label] for label in labels] for a in ours]
    np.testing.assert_allclose(probabilities, evaluated["complexity"]["probs"], atol=1e-5, rtol=0)
    # The predicted label is the most probable one, and "probability" is its probability.
    for answer in answers:
        for prediction in answer.values():
            assert prediction["probability"] == max(prediction["probabilities"].values())
            assert prediction["probabilities"][prediction["label"]] == prediction["probability"]


def test_compare_gives_the_clone_labels_and_probabilities_of_mtpeft_evaluate(run, run_dir, evaluated):
    pairs = _test_examples(run_dir)["clone"]
    answers = run.compare([e.code for e in pairs], [e.code_b for e in pairs], task="clone")
    lines = (layout.predictions_dir(run_dir, "test") / "clone.predictions.txt").read_text().splitlines()
    official = {tuple(line.split("\t")[:2]): line.split("\t")[2] for line in lines}
    assert [a["label"] for a in answers] == [official[(e.id, e.id_b)] for e in pairs]
    probabilities = [[a["probabilities"][label] for label in ("0", "1")] for a in answers]
    np.testing.assert_allclose(probabilities, evaluated["clone"]["probs"], atol=1e-5, rtol=0)
    # Each label is the likelier class (whichever classes this tiny model happens to predict).
    assert [a["label"] for a in answers] == [("0", "1")[int(np.argmax(p))] for p in probabilities]


def test_embed_gives_the_code_search_vectors_of_mtpeft_evaluate(run, run_dir, evaluated):
    examples = _test_examples(run_dir)["code-search"]
    codes = run.embed([e.code for e in examples])
    queries = run.embed([e.query for e in examples], query=True)
    np.testing.assert_allclose(codes, evaluated["code-search"]["code_emb"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(queries, evaluated["code-search"]["query_emb"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(codes, axis=1), 1.0, atol=1e-5)
    # The official prediction file ranks candidates as our vectors do (where no near-tie makes it noise).
    lines = (
        (layout.predictions_dir(run_dir, "test") / "code-search.predictions.jsonl").read_text().splitlines()
    )
    ids = [int(e.id) for e in examples]
    scores = queries @ codes.T
    for row, line in zip(scores, lines, strict=True):
        top_two = np.sort(row)[-2:]
        if top_two[1] - top_two[0] > 1e-4:
            assert json.loads(line)["answers"][0] == ids[int(np.argmax(row))]


def test_every_one_snippet_task_costs_one_backbone_pass_per_snippet(run, encoded_rows):
    answers = run.analyze(SHORT)  # all shorter than the smallest limit (40 tokens)
    assert sum(encoded_rows) == len(SHORT) and len(answers) == len(SHORT)
    assert all(set(a) == {"vulnerability", "complexity"} for a in answers)
    encoded_rows.clear()
    run.analyze(SHORT + SHORT[:2])  # the same snippet twice is encoded once
    assert sum(encoded_rows) == len(SHORT)


def test_reusing_encodings_encodes_each_sequence_once_across_calls(run, encoded_rows):
    with run.reusing_encodings():
        together = run.analyze(SHORT)
        run.embed(SHORT)  # the same code at the same truncation: no new pass
        run.compare(SHORT[0], SHORT[1:])
        again = run.analyze(SHORT)
    assert sum(encoded_rows) == len(SHORT)
    for first, second in zip(together, again, strict=True):
        assert first["complexity"]["probabilities"] == pytest.approx(second["complexity"]["probabilities"])
    run.analyze(SHORT)  # outside the block: encoded again
    assert sum(encoded_rows) == 2 * len(SHORT)


def test_a_long_snippet_is_truncated_to_each_tasks_own_limit(run, encoded_rows):
    long = "int f ( int a ) { " + " ".join(f"a = a + {i} ;" for i in range(40)) + " return a ; }"
    assert run.count_tokens([long])[0] > 64
    together = run.analyze(long)
    assert sum(encoded_rows) == 2  # 40 tokens for complexity, 64 for vulnerability: two distinct inputs
    for task, limit in (("vulnerability", 64), ("complexity", 40)):
        alone = run.analyze(long, tasks=task, max_tokens=limit)[task]
        np.testing.assert_allclose(
            list(together[task]["probabilities"].values()), list(alone["probabilities"].values()), atol=1e-6
        )
    # max_tokens overrides every task's limit: one input for the tasks, and the OOD score's own (it is
    # always read at the limit its statistics were fitted at, 40 tokens here).
    encoded_rows.clear()
    run.analyze(long, max_tokens=32)
    assert sum(encoded_rows) == 2
    encoded_rows.clear()
    run.analyze(long, max_tokens=run.ood.limit)
    assert sum(encoded_rows) == 1


def test_batched_answers_come_back_in_the_callers_order(run):
    snippets = SHORT + ["int g ( char * s ) { danger_call ( s , input ) ; " + "x ; " * 30 + "}"] + SHORT[::-1]
    batched = run.analyze(snippets)  # batch_size 5: several length-sorted batches
    for snippet, answer in zip(snippets, batched, strict=True):
        alone = run.analyze(snippet)
        for task in answer:
            np.testing.assert_allclose(
                list(answer[task]["probabilities"].values()),
                list(alone[task]["probabilities"].values()),
                atol=1e-6,
            )


def test_compare_one_snippet_against_many_encodes_each_once(run, encoded_rows):
    candidates = SHORT + [SHORT[0]]
    answers = run.compare(SHORT[0], candidates)  # the only pair task: no name needed
    assert len(answers) == len(candidates) and sum(encoded_rows) == len(SHORT)
    assert answers[0]["label"] == answers[-1]["label"]  # the same pair, the same answer
    assert answers[0]["probability"] == pytest.approx(answers[-1]["probability"], abs=1e-6)
    single = run.compare(SHORT[0], SHORT[1], task="clone")
    assert single["label"] in ("0", "1") and abs(sum(single["probabilities"].values()) - 1) < 1e-6


def test_tasks_describe_kind_labels_description_and_limits(run):
    tasks = run.tasks
    assert {n: t.kind for n, t in tasks.items()} == {
        "vulnerability": "binary",
        "complexity": "multiclass",
        "clone": "pair",
        "code-search": "retrieval",
    }
    assert tasks["complexity"].labels == ("1", "logn", "n", "nlogn", "n_square")
    assert "ulnerab" in tasks["vulnerability"].description
    assert (tasks["complexity"].max_length, tasks["code-search"].max_query_length) == (40, 12)
    assert run.max_tokens == 40  # the smallest code limit: a longer unit is truncated for some task
    assert run.info["run_id"] == json.loads((run.run_dir / "run.json").read_text())["run_id"]


def test_the_run_is_the_scanners_analyzer(run):
    from mtpeft.scan import Analyzer

    assert isinstance(run, Analyzer)
    answers = run.analyze(SHORT[:2], ["vulnerability"], max_tokens=None)  # the scanner's call
    assert [set(a) for a in answers] == [{"vulnerability"}] * 2
    assert run.embed(SHORT, max_tokens=None).shape == (len(SHORT), 256)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.analyze([]), "no snippets given"),
        (lambda r: r.analyze(["ok", 3]), "snippet 1 is int, not str"),
        (lambda r: r.analyze([b"int f();"]), r"snippet 0 is bytes, not str \(decode bytes first"),
        (lambda r: r.analyze(b"int f();"), "expected a str or a list of str"),
        (lambda r: r.analyze(None), "expected a str or a list of str"),
        (
            lambda r: r.analyze(["ok", "bad \ud800 text"]),
            "snippet 1 holds a lone surrogate U\\+D800 at character 4",
        ),
        (
            lambda r: r.analyze("x", tasks="clone"),
            r"analyze\(\) cannot answer task 'clone' \(pair\).*compare",
        ),
        (lambda r: r.analyze("x", tasks=["vulnerabilty"]), "unknown task 'vulnerabilty'"),
        (lambda r: r.analyze("x", max_tokens=0), "max_tokens must be an integer of at least 2"),
        (
            lambda r: r.analyze("x", max_tokens=4096),
            "max_tokens 4096 is more than the 512 positions tiny-bert",
        ),
        (lambda r: r.compare(["a", "b"], ["c", "d", "e"]), r"as many snippets in a \(2\) as in b \(3\)"),
        (
            lambda r: r.compare("a", "b", task="vulnerability"),
            r"compare\(\) cannot answer task 'vulnerability'",
        ),
        (lambda r: r.embed("x", task="complexity"), r"embed\(\) cannot answer task 'complexity'"),
        # One rule for blank code, as the data readers, `mtpeft predict` and the server apply it.
        (lambda r: r.analyze(""), "snippet is empty: code text is needed"),
        (lambda r: r.analyze(["int a;", " \n\t "]), r"snippet 1 is empty \(only whitespace\)"),
        (lambda r: r.compare("int a;", "   ", task="clone"), r"b is empty \(only whitespace\)"),
    ],
)
def test_bad_input_is_one_clear_error_not_a_traceback(run, call, message):
    with pytest.raises(InputError, match=message):
        call(run)


def test_loading_something_that_is_not_a_run_says_so(tmp_path):
    import mtpeft

    with pytest.raises(MtpeftError, match="no such run directory"):
        mtpeft.load(tmp_path / "missing")
    with pytest.raises(MtpeftError, match="holds no trained model"):
        mtpeft.load(tmp_path)


def test_import_mtpeft_stays_torch_free_and_load_is_there():
    code = (
        "import sys, mtpeft; assert 'load' in dir(mtpeft) and 'load' in mtpeft.__all__; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
