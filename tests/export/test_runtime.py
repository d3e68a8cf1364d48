"""ExportedRun: the PyTorch Run's API and behaviour (length batching, reuse, search, errors) from ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from mtpeft.errors import InputError

CODES = ["int f ( ) { return 1 ; }", "x = 1", "def g(a):\n    return a", "while True:\n    pass" * 30]


@pytest.fixture
def passes(lora_pair):
    """Rows the exported graph ran since the test started (one row = one sequence)."""
    rows: list[int] = []
    handle = lora_pair[1].watch_passes(lambda count, _tokens: rows.append(count))
    yield rows
    handle.remove()


def _labels_and_probabilities(answers: list[dict]) -> tuple[list[dict], np.ndarray]:
    labels = [{t: a[t]["label"] for t in a} for a in answers]
    return labels, np.array([p for a in answers for t in a for p in a[t]["probabilities"].values()])


def test_answers_do_not_depend_on_the_batch_size_or_the_order(lora_pair, lora_export):
    import mtpeft

    _, exported = lora_pair
    labels, probs = _labels_and_probabilities(exported.analyze(CODES))
    # Other batches pad the same sequence differently, which moves a probability by float noise only.
    for answers in (
        mtpeft.load(lora_export, batch_size=1).analyze(CODES),
        exported.analyze(CODES[::-1])[::-1],
    ):
        other_labels, other_probs = _labels_and_probabilities(answers)
        assert other_labels == labels
        assert np.abs(other_probs - probs).max() <= 1e-5


def test_a_snippet_within_every_limit_runs_once_for_all_tasks(lora_pair, passes):
    _, exported = lora_pair
    exported.analyze(["x = 1", "y = 2"])
    assert sum(passes) == 2  # two sequences, every task (and the OOD score) read from the one run


def test_single_inputs_give_single_answers_as_the_pytorch_run(lora_pair):
    reference, exported = lora_pair
    assert exported.analyze("x = 1").keys() == reference.analyze("x = 1").keys()
    one = exported.compare("x = 1", CODES, task="clone")  # one snippet against many
    assert [p["label"] for p in one] == [p["label"] for p in reference.compare("x = 1", CODES, task="clone")]
    assert exported.compare("x = 1", "y = 2")["label"] in ("0", "1")
    vector = exported.embed("parse a config file", query=True)
    assert vector.shape == (256,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_reusing_encodings_runs_each_sequence_once_and_answers_the_same(lora_pair, passes):
    _, exported = lora_pair
    plain = exported.analyze(CODES)
    with exported.reusing_encodings():
        limits = {exported.token_limit(t): CODES for t in exported.snippet_tasks}
        exported.encode_ahead(limits)
        ran = sum(passes)
        assert exported.analyze(CODES) == plain
        assert sum(passes) == ran  # every sequence was already run by encode_ahead


def test_errors_name_what_to_do(lora_pair):
    _, exported = lora_pair
    with pytest.raises(InputError, match="generate\\(\\)"):
        exported.generate("x = 1")
    with pytest.raises(InputError, match="positions tiny-bert reads"):
        exported.analyze("x = 1", max_tokens=100_000)
    with pytest.raises(InputError, match="compare\\(a, b, task=...\\)"):
        exported.analyze("x = 1", tasks=["clone"])
    with pytest.raises(InputError, match="device 'tpu'"):
        import mtpeft

        mtpeft.load(exported.run_dir, device="tpu")


def test_an_index_built_by_the_run_is_searched_by_its_fp32_export_not_by_int8(
    lora_pair, lora_int8_export, tmp_path
):
    import mtpeft
    from mtpeft.index import SearchIndexError, build_index

    reference, exported = lora_pair
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text(
        "def read_config(path):\n    return open(path).read()\n\n"
        "def add(a, b):\n    return a + b\n\ndef parse_flag(text):\n    return text == 'yes'\n"
    )
    built = build_index(reference, tmp_path / "src", tmp_path / "index", progress=False)
    want = reference.search("read a configuration file", 3, index=built.index)
    got = exported.search("read a configuration file", 3, index=built.index)
    assert [(h.rank, h.name) for h in got] == [(h.rank, h.name) for h in want]
    assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
    with pytest.raises(SearchIndexError, match="other model files"):
        mtpeft.load(lora_int8_export).search("read a file", index=built.index)


def test_load_many_takes_export_folders_beside_run_directories(lora_run, lora_export):
    import mtpeft

    exported, run, again = mtpeft.load_many([lora_export, lora_run, lora_export], device="cpu")
    assert type(exported).__name__ == "ExportedRun" and type(run).__name__ == "Run"
    assert again is exported
    assert (
        exported.analyze("x = 1")["vulnerability"]["label"] == run.analyze("x = 1")["vulnerability"]["label"]
    )
