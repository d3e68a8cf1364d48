"""`mtpeft export`: the exported graph answers every task as the PyTorch run does, for each way a method
ends up in the graph (LoRA and IA3 merged into the weights, a bottleneck adapter kept as modules)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtpeft import layout

# Beyond the test split: a snippet longer than every task's limit (truncated differently per task), a
# duplicate, and very short ones (the shortest sequences of a batch).
EXTRA = ["int f(char *s) { char b[8]; strcpy(b, s); return b[0]; }\n" * 12, "x = 1", "x = 1", "pass"]


def _test_examples(run_dir: Path) -> dict[str, list]:
    from mtpeft.modeling.task_data import resolve_tasks

    config = layout.load_run_config(run_dir)
    return {name: task.examples("test", seed=config.seed) for name, task in resolve_tasks(config).items()}


def _probabilities(answers: list[dict], task: str) -> tuple[list[str], np.ndarray]:
    answers = [a.get(task, a) for a in answers]  # analyze: {task: answer}; compare: the answer
    labels = [a["label"] for a in answers]
    rows = [list(a["probabilities"].values()) for a in answers]
    return labels, np.array(rows)


def _agree(reference, exported, run_dir: Path) -> None:
    """Labels equal and probabilities/vectors within 1e-4, task by task, on the test split and EXTRA."""
    examples = _test_examples(run_dir)
    for task in reference.snippet_tasks:
        codes = [e.code for e in examples[task]] + EXTRA
        want, got = reference.analyze(codes, [task]), exported.analyze(codes, [task])
        (want_labels, want_p), (got_labels, got_p) = _probabilities(want, task), _probabilities(got, task)
        assert got_labels == want_labels, task
        assert np.abs(got_p - want_p).max() <= 1e-4, task
        assert [a[task]["unfamiliar"] for a in got] == [a[task]["unfamiliar"] for a in want]
    for task in reference.pair_tasks:
        a, b = [e.code for e in examples[task]] + EXTRA, [e.code_b for e in examples[task]] + EXTRA[::-1]
        (want_labels, want_p), (got_labels, got_p) = (
            _probabilities(run.compare(a, b, task), task) for run in (reference, exported)
        )
        assert got_labels == want_labels, task
        assert np.abs(got_p - want_p).max() <= 1e-4, task
    for task in reference.retrieval_tasks:
        codes, queries = [e.code for e in examples[task]] + EXTRA, [e.query for e in examples[task]]
        for texts, query in ((codes, False), (queries, True)):
            want, got = reference.embed(texts, task, query=query), exported.embed(texts, task, query=query)
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.abs(got - want).max() <= 1e-4, task


@pytest.mark.parametrize(
    ("run_fixture", "export_fixture", "adapter"),
    [
        ("lora_run", "lora_export", "merged into the weights"),
        ("ia3_run", "ia3_export", "merged into the weights"),
        ("adapter_run", "adapter_export", "in the graph"),
    ],
)
def test_the_export_answers_every_task_as_the_pytorch_run(request, run_fixture, export_fixture, adapter):
    import mtpeft

    run_dir, folder = request.getfixturevalue(run_fixture), request.getfixturevalue(export_fixture)
    reference, exported = mtpeft.load(run_dir, device="cpu"), mtpeft.load(folder)
    assert type(exported).__name__ == "ExportedRun"
    assert exported.snippet_tasks == ["vulnerability", "complexity"]
    assert (exported.pair_tasks, exported.retrieval_tasks) == (["clone"], ["code-search"])
    _agree(reference, exported, run_dir)
    meta = json.loads((folder / "export.json").read_text())
    assert meta["source"]["adapter"] == adapter and meta["graph"]["precision"] == "fp32"
    assert meta["source"]["run_id"] == reference.run_id
    assert meta["source"]["best_sha256"] == reference.fingerprint
    for task, record in meta["agreement"]["fp32"].items():  # what the export measured, per task
        assert record["examples"] > 0 and record["answers_agree"] == record["examples"], task
        assert record["max_difference"] <= 1e-4
        assert set(record["metric_change"]) == set(reference.tasks[task].metrics)


def test_the_lora_export_is_the_plain_backbone_one_graph_of_every_head(lora_export):
    import onnx

    graph = onnx.load(str(lora_export / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == [
        "pooled", "probs.vulnerability", "probs.complexity", "embedding.code-search",
    ]  # fmt: skip
    for tensor in graph.input:  # both axes dynamic: named, not fixed numbers
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert not any("lora" in t.name for t in graph.initializer)  # merged: no adapter weights left


def test_calibration_and_ood_statistics_travel_with_the_export(lora_pair, lora_export):
    reference, exported = lora_pair
    assert exported.temperatures == reference.temperatures and reference.temperatures
    assert exported.ood is not None and exported.ood.thresholds == reference.ood.thresholds
    assert exported.info["calibration"] == reference.info["calibration"]
    meta = json.loads((lora_export / "export.json").read_text())
    assert meta["calibration"]["temperatures"] == reference.temperatures
    assert (lora_export / "calibration" / "ood.npz").is_file()


def test_int8_export_reports_its_agreement_and_metric_change_per_task(lora_int8_export, lora_export):
    meta = json.loads((lora_int8_export / "export.json").read_text())
    assert meta["graph"]["precision"] == "int8"
    assert set(meta["agreement"]["fp32"]) == set(meta["agreement"]["int8"]) == set(meta["tasks"])
    for record in meta["agreement"]["int8"].values():
        assert 0 <= record["answers_agree"] <= record["examples"]
        drops = [-change for change in record["metric_change"].values()]
        assert record["safe_to_quantize"] == (max(drops) <= meta["agreement"]["int8_safe_drop"])
    # int8 weights: a smaller graph, and vectors that are no longer the fp32 run's (own fingerprint)
    assert (lora_int8_export / "model.onnx").stat().st_size < (lora_export / "model.onnx").stat().st_size / 2
    assert meta["fingerprint"] != json.loads((lora_export / "export.json").read_text())["fingerprint"]


def test_the_target_folder_is_never_one_that_writing_would_destroy(lora_run, tmp_path):
    from mtpeft.errors import InputError
    from mtpeft.export.build import check_target

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an mtpeft export folder"):
        check_target(mine, lora_run)
    with pytest.raises(InputError, match="inside or around the run directory"):
        check_target(lora_run / "export", lora_run)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        check_target(tmp_path / "file", lora_run)


def test_an_earlier_export_is_replaced_whole_and_what_is_not_its_own_stays(tmp_path):
    from mtpeft.export.build import _swap_in
    from mtpeft.manifest import write_manifest

    def folder(path: Path, text: str) -> Path:
        (path / "tokenizer").mkdir(parents=True)
        (path / "export.json").write_text(text)
        (path / "tokenizer" / "tokenizer.json").write_text(text)
        write_manifest(path)
        return path

    out = folder(tmp_path / "out", "old")
    (out / "model.onnx.bak").write_text("a user's file, appeared after the export")
    _swap_in(folder(tmp_path / "new", "new"), out)
    assert (out / "export.json").read_text() == "new" and not (tmp_path / "new").exists()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert [sorted(q.name for q in p.rglob("*")) for p in left] == [["model.onnx.bak"]]
