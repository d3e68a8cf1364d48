"""The pure helpers of benchmarks/serve_load.py: request mix, summaries, /metrics parsing, targets."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def _load():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


sl = _load()
FUNCTIONS = [f"def f{i}(x):\n    return x * {i}\n" for i in range(10)]
ALL_TASKS = sl.RunTasks(snippet=["defect"], pair=["clone"], retrieval=["search"])


def _mix(invalid_share: float = 0.2, tasks=ALL_TASKS, options=None):
    return sl.RequestMix(FUNCTIONS, tasks, options or sl.ServerOptions(), invalid_share)


def test_parse_clients() -> None:
    assert sl.parse_clients("32") == [32]
    assert sl.parse_clients("32,64,32") == [32, 64]
    for bad in ("0", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            sl.parse_clients(bad)


def test_percentile() -> None:
    values = list(range(1, 101))
    assert sl.percentile(values, 50) == pytest.approx(50.5)
    assert sl.percentile(values, 99) == pytest.approx(99.01)
    assert sl.percentile([3.0], 95) == 3.0
    assert sl.percentile([], 50) is None


def test_mix_is_deterministic_and_respects_the_share() -> None:
    mixes = {share: _mix(share) for share in (0.0, 0.2, 1.0)}

    def draws(seed: int, share: float) -> list:
        rng = random.Random(seed)
        return [mixes[share].draw(rng) for _ in range(300)]

    assert draws(1, 0.2) == draws(1, 0.2)
    assert draws(1, 0.2) != draws(2, 0.2)
    assert all(r.valid for r in draws(1, 0.0))
    assert not any(r.valid for r in draws(1, 1.0))
    invalid = sum(not r.valid for r in draws(3, 0.2))
    assert 30 <= invalid <= 90
    assert {r.kind for r in draws(4, 1.0)} == set(sl.INVALID_KINDS)
    assert {r.kind for r in draws(5, 0.0)} == set(sl.VALID_WEIGHTS)


def test_valid_requests_are_within_limits_and_count_their_texts() -> None:
    options, mix = sl.ServerOptions(), _mix(0.0)
    rng = random.Random(0)
    for _ in range(200):
        request = mix.draw(rng)
        body = json.loads(request.body)
        assert len(request.body) <= options.max_body_bytes
        if request.kind == "analyze_pairs":
            assert request.texts == 2 * len(body["pairs"]) == 2 * request.answers
        else:
            assert request.texts == len(body["snippets"]) == request.answers <= 4


def test_a_run_without_pairs_gets_no_pair_requests() -> None:
    mix = _mix(0.0, tasks=sl.RunTasks(snippet=["defect"], pair=[], retrieval=[]))
    rng = random.Random(0)
    assert "analyze_pairs" not in {mix.draw(rng).kind for _ in range(200)}


def test_invalid_bodies_cross_exactly_their_limit() -> None:
    options = sl.ServerOptions(max_body_bytes=10_000, max_snippets=8, max_chars=5_000)
    invalid = _mix(options=options).invalid
    with pytest.raises(ValueError):
        json.loads(invalid["malformed_json"].body)
    too_many = json.loads(invalid["too_many_snippets"].body)["snippets"]
    assert len(too_many) == options.max_snippets + 1
    oversized = invalid["oversized_body"].body
    assert len(oversized) > options.max_body_bytes
    snippets = json.loads(oversized)["snippets"]
    assert len(snippets) <= options.max_snippets and max(map(len, snippets)) <= options.max_chars
    assert isinstance(json.loads(invalid["wrong_type"].body)["snippets"], str)
    assert json.loads(invalid["unknown_task"].body)["tasks"] == ["no-such-task"]


def test_usable_functions_drop_blank_and_long_ones() -> None:
    options = sl.ServerOptions(max_chars=100)
    assert sl.usable_functions(["def f(): pass", "   ", "x" * 101], options) == ["def f(): pass"]


def test_check_reply() -> None:
    valid = sl.Request("analyze_1", True, "/v1/analyze", b"{}", 1, "snippets", 1)
    assert sl.check_reply(valid, 200, b'{"snippets": [{}]}') == ""
    assert sl.check_reply(valid, 200, b'{"snippets": []}') != ""
    invalid = sl.Request("wrong_type", False, "/v1/analyze", b"{}")
    assert sl.check_reply(invalid, 422, b'{"detail": "snippets: bad"}') == ""
    assert sl.check_reply(invalid, 422, b'{"error": "x"}') != ""
    assert sl.check_reply(invalid, 500, b"Internal Server Error") == "reply is not JSON"


def _record(kind: str, valid: bool, status: int, ms: float = 10.0, texts: int = 1, end: float = 1.0):
    return sl.Record(kind, valid, status, ms / 1000, texts, end)


def test_summaries_count_failures() -> None:
    records = [_record("analyze_1", True, 200, ms) for ms in (10, 20, 30)]
    records += [_record("analyze_1", True, 500), _record("embed", True, 0)]
    records += [_record("analyze_1", True, 200, end=3.5)]  # answered after the window: checked, not timed
    records += [_record("wrong_type", False, 422), _record("wrong_type", False, 200)]
    records += [_record("oversized_body", False, 500), _record("oversized_body", False, 400)]
    valid = sl.summarise_valid(records, start=1.0, end=3.0)
    assert valid["completed"] == 3 and valid["requests_per_s"] == 1.5 and valid["answered"] == 6
    assert valid["5xx"] == 1 and valid["transport_errors"] == 1 and valid["not_ok"] == 2
    assert valid["latency_ms"]["p50"] == pytest.approx(20)
    invalid = sl.summarise_invalid(records)
    assert invalid["failures"] == 2 and not invalid["all_4xx"]
    assert invalid["by_kind"]["oversized_body"]["other_4xx"] == 1
    assert invalid["by_kind"]["unknown_task"] == invalid["by_kind"]["unknown_task"] | {
        "requests": 0,
        "all_4xx": True,
    }


EXPOSITION = """# TYPE mtpeft_backbone_passes counter
mtpeft_backbone_passes_total{{run="r"}} {passes}
# TYPE mtpeft_batch_requests histogram
mtpeft_batch_requests_bucket{{le="+Inf"}} {batches}
mtpeft_batch_requests_count {batches}
mtpeft_batch_requests_sum {requests}
# TYPE mtpeft_requests counter
mtpeft_requests_total{{endpoint="/v1/analyze",status="200"}} {requests}
mtpeft_requests_total{{endpoint="/v1/analyze",status="503"}} {errors}
"""


def test_batching_stats_are_deltas_between_scrapes() -> None:
    before = EXPOSITION.format(passes=5, batches=5, requests=5, errors=0)
    after = EXPOSITION.format(passes=15, batches=10, requests=45, errors=2)
    stats = sl.batching_stats(before, after)
    assert stats["backbone_passes"] == 10
    assert stats["mean_requests_per_batch"] == 8
    assert stats["server_counted_5xx"] == 2


def _setting(clients: int, batching: bool, rps: float, fivexx: int = 0, ratio: float = 1.0) -> dict:
    return {
        "clients": clients,
        "batching": batching,
        "crashed": False,
        "valid": {"requests_per_s": rps, "5xx": fivexx},
        "warmup": {"valid_5xx": 0, "invalid_failures": 0},
        "invalid": {"failures": 0},
        "memory": {"ratio": ratio},
    }


def test_speedups_and_targets() -> None:
    settings = [_setting(32, True, 90.0), _setting(32, False, 20.0, ratio=1.2), _setting(64, True, 50.0)]
    ups = sl.speedups(settings)
    assert [(u["clients"], u["speedup"]) for u in ups] == [(32, 4.5)]
    marks = {name: t["met"] for name, t in sl.targets(settings, ups).items()}
    assert marks == {
        "speedup_at_32_clients": True,
        "valid_5xx": True,
        "memory_end_over_warmup": False,
        "invalid_all_4xx": True,
    }
    assert sl.targets(settings[2:], sl.speedups(settings[2:]))["speedup_at_32_clients"]["met"] is None


def test_summary_table_shows_measured_and_failed_settings() -> None:
    records = [_record("analyze_1", True, 200, 12.0), _record("wrong_type", False, 422)]
    measured = {
        "clients": 4,
        "batching": True,
        "valid": sl.summarise_valid(records, 0.0, 2.0),
        "invalid": sl.summarise_invalid(records),
        "memory": {"rss_after_warmup_bytes": 2**30, "ratio": 1.01},
        "metrics": {"backbone_passes": 3.0, "mean_requests_per_batch": None},
        "cpu": {"client_share_of_one_core": 0.05},
    }
    failed = {"clients": 4, "batching": False, "error": "mtpeft serve exited with 1 while starting:\nlog"}
    lines = sl.summary_table([measured, failed]).splitlines()
    assert len(lines) == 3 and "1024" in lines[1] and "FAILED: mtpeft serve exited with 1" in lines[2]


def test_finished_default_run_matches_settings(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "inference-bench-4heads-abc"
    (run / "best").mkdir(parents=True)
    config = "model: minilm\nmax_steps: 20\ntasks:\n- max_length: 256\n- max_length: 256\n"
    (run / "config.yaml").write_text(config, encoding="utf-8")
    assert sl.finished_default_run(tmp_path, "minilm", 4, 20, 256) is None  # no best/MANIFEST.json yet
    (run / "best" / "MANIFEST.json").write_text("{}", encoding="utf-8")
    assert sl.finished_default_run(tmp_path, "minilm", 4, 20, 256) == run
    assert sl.finished_default_run(tmp_path, "minilm", 4, 30, 256) is None
    assert sl.finished_default_run(tmp_path, "minilm", 2, 20, 256) is None
