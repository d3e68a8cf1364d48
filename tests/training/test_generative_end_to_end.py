"""One shared module for heads, instruct and generation tasks: train, save, reload, evaluate (tiny models).

A decoder (tiny-llama) and an encoder-decoder (a tiny T5), each with vulnerability in heads form, clone in
instruct form (the answer word generated) and repair (generation), on fixture data written here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtpeft.config import validate_config
from mtpeft.data.fixtures import write_fixture_dataset
from mtpeft.data.formats.base import load_split
from mtpeft.evaluation.run_eval import evaluate_run
from mtpeft.modeling.build import load_trained
from mtpeft.store import RunStore
from mtpeft.tasks import get_task
from mtpeft.training.run import run_training
from tiny_t5 import tiny_t5_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    formats = {"vulnerability": "devign-jsonl", "clone": "bigclonebench", "repair": "code-refinement"}
    return {task: write_fixture_dataset(fmt, root, n_per_split=12) for task, fmt in formats.items()}


def _config(data: dict[str, Path], model: str, workspace: Path, **overrides) -> dict:
    common = {"batch_size": 4, "eval_batch_size": 8, "max_length": 48}
    tasks = [
        {"task": "vulnerability", "data": str(data["vulnerability"])} | common,
        {"task": "clone", "data": str(data["clone"]), "formulation": "instruct"} | common,
        {"task": "repair", "data": str(data["repair"]), "max_target_length": 12} | common,
    ]
    run = {"name": "gen", "model": model, "lr": 5e-3, "tasks": tasks, "max_steps": 4, "eval_every": 2}
    return run | {"save_every": 2, "workspace": str(workspace), "baselines": False} | overrides


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-t5"])
def trained(request, data, tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp(request.param)
    model = tiny_t5_folder(root) if request.param == "tiny-t5" else request.param
    config = validate_config(_config(data, model, root / "ws"))
    return run_training(config, progress=False)[0]


def test_every_formulation_trains_and_lands_in_the_store(trained):
    test = trained.metrics["test"]
    assert set(test) == {"vulnerability", "clone", "repair"}
    assert 0.0 <= test["clone"]["f1"] <= 1.0 and 0.0 <= test["repair"]["exact_match"] <= 1.0
    record = RunStore(Path(trained.run_dir).parents[1] / "mtpeft.sqlite").get(trained.run_id)
    assert record.status == "finished" and record.metrics["test"] == test
    # Only vulnerability has a head; clone and repair train through the LM head.
    meta = json.loads((trained.run_dir / "best" / "heads.json").read_text())
    assert set(meta["heads"]) == {"vulnerability"} and set(meta["lm_tasks"]) == {"clone", "repair"}


def test_reloaded_run_scores_the_same_and_writes_label_and_text_predictions(trained):
    again, _ = evaluate_run(trained.run_dir, "test", baselines=False, progress=False)
    assert again == trained.metrics["test"]
    predictions = trained.run_dir / "predictions" / "test"
    clone = [line.split("\t")[2] for line in (predictions / "clone.predictions.txt").read_text().splitlines()]
    assert set(clone) <= {"0", "1"}  # an instruct answer is always one of the labels
    rows = [json.loads(line) for line in (predictions / "repair.predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(isinstance(row["hypothesis"], str) for row in rows)


def test_model_generate_writes_what_evaluation_wrote(trained):
    run = load_trained(trained.run_dir)
    entry = next(e for e in run.config.tasks if e.label == "repair")
    examples = {e.id: e.code for e in load_split(get_task("repair"), entry.data, "test")}
    predictions = trained.run_dir / "predictions" / "test" / "repair.predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()[:3]]
    # One path: the same prompts and greedy decoding as evaluation, from raw code.
    assert run.model.generate("repair", [examples[r["id"]] for r in rows]) == [r["hypothesis"] for r in rows]
    with pytest.raises(ValueError, match="task 'vulnerability' has no language-model formulation"):
        run.model.generate("vulnerability", ["int f();"])


def test_a_config_without_generative_fields_keeps_its_run_key(data, tmp_path):
    heads_only = validate_config(
        _config(data, "tiny-bert", tmp_path) | {"tasks": [{"task": "vulnerability"}]}
    )
    hashed = heads_only.hashable()
    assert "token_loss" not in hashed
    assert set(hashed["tasks"][0]) == {
        "task", "data", "name", "batch_size", "eval_batch_size", "max_length", "max_query_length",
        "max_train_examples", "max_eval_examples",
    }  # fmt: skip


def test_python_api_generates_for_generative_tasks_only(trained):
    import mtpeft
    from mtpeft.errors import InputError

    run = mtpeft.load(trained.run_dir)
    assert run.generation_tasks == ["clone", "repair"]
    entry = next(e for e in run.config.tasks if e.label == "repair")
    example = load_split(get_task("repair"), entry.data, "test")[0]
    direct = load_trained(trained.run_dir).model.generate("repair", [example.code])
    assert run.generate(example.code, task="repair") == direct[0]  # one str in, one str out
    assert run.generate([example.code], task="repair", max_new_tokens=2)[0] == run.generate(
        example.code, task="repair", max_new_tokens=2
    )
    with pytest.raises(InputError, match="needs task="):
        run.generate(example.code)  # two generative tasks: which one must be said
    with pytest.raises(InputError, match="generate\\(\\) cannot answer task 'vulnerability'"):
        run.generate(example.code, task="vulnerability")


def test_predict_cli_writes_generated_text_beside_labels(trained, tmp_path):
    from typer.testing import CliRunner

    from mtpeft.cli.main import app

    entry = next(e for e in load_trained(trained.run_dir).config.tasks if e.label == "repair")
    code = load_split(get_task("repair"), entry.data, "test")[0].code
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"id": "a", "code": code}) + "\n")
    result = CliRunner().invoke(app, ["predict", str(trained.run_dir), str(lines)])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[0])
    assert row["id"] == "a" and set(row["predictions"]) == {"vulnerability", "repair"}
    assert row["predictions"]["repair"] == {"text": mtpeft_generate(trained.run_dir, code)}
    assert set(row["predictions"]["vulnerability"]) == {"label", "probability", "ood_score", "unfamiliar"}


def mtpeft_generate(run_dir: Path, code: str) -> str:
    import mtpeft

    return mtpeft.load(run_dir).generate(code, task="repair")


def test_instruct_classification_answers_compare_and_predict_as_evaluation_scored_it(trained, tmp_path):
    """A pair task in instruct form is a pair task to every user: compare(), predict with code_b."""
    from typer.testing import CliRunner

    import mtpeft
    from mtpeft.cli.main import app

    run = mtpeft.load(trained.run_dir)
    assert run.pair_tasks == ["clone"] and run.snippet_tasks == ["vulnerability"]
    entry = next(e for e in run.config.tasks if e.label == "clone")
    pairs = load_split(get_task("clone"), entry.data, "test")[:5]
    answers = run.compare([p.code for p in pairs], [p.code_b for p in pairs], task="clone")
    evaluated = (trained.run_dir / "predictions" / "test" / "clone.predictions.txt").read_text().splitlines()
    labels = run.tasks["clone"].labels
    # The label word evaluation found likeliest is the label compare() gives, with its probability.
    assert [str(labels.index(a["label"])) for a in answers] == [line.split("\t")[2] for line in evaluated[:5]]
    assert all(abs(sum(a["probabilities"].values()) - 1.0) < 1e-5 for a in answers)
    one = run.compare(pairs[0].code, [p.code_b for p in pairs[:2]], task="clone")  # one against many
    assert one[0]["label"] == answers[0]["label"]
    assert one[0]["probability"] == pytest.approx(answers[0]["probability"], abs=1e-4)
    lines = tmp_path / "pairs.jsonl"
    lines.write_text(
        "".join(json.dumps({"id": p.id, "code": p.code, "code_b": p.code_b}) + "\n" for p in pairs)
    )
    result = CliRunner().invoke(app, ["predict", str(trained.run_dir), str(lines), "--tasks", "clone"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["predictions"]["clone"]["label"] for r in rows] == [a["label"] for a in answers]
