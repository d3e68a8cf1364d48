"""The cost meter: arithmetic of the report, resumable wall time, memory, and summing single-mode runs."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mtpeft.training.cost import CostMeter, sum_costs, train_flops_estimate

N = 1_000_000  # backbone parameters


def _meter(trainable: int = 10_000) -> CostMeter:
    meter = CostMeter(trainable_params=trainable, backbone_params=N)
    meter.add_batch(tokens=300, padded_tokens=400, samples=4, task="vuln")
    meter.add_batch(tokens=torch.tensor(100), padded_tokens=torch.tensor(100), samples=2, task="clone")
    meter.add_batch(tokens=50, padded_tokens=100, samples=1, task="vuln")
    return meter


def test_report_arithmetic():
    meter = _meter()
    meter.wall_time_s = 2.0  # as if restored from a checkpoint
    report = meter.report(stored_bytes=40_000, full_model_bytes=4_000_000)
    assert report["tokens"] == 450 and report["padded_tokens"] == 600 and report["samples"] == 7
    assert report["padding_fraction"] == pytest.approx(0.25)
    assert report["tokens_by_task"] == {"vuln": 350, "clone": 100}
    assert report["trainable_pct"] == pytest.approx(1.0)
    assert report["tokens_per_s"] == pytest.approx(225.0) and report["samples_per_s"] == pytest.approx(3.5)
    # PEFT: forward 2N + activation-gradient backward 2N + weight gradients 2·trainable, per position.
    assert report["train_flops_estimate"] == pytest.approx((4 * N + 2 * 10_000) * 600)
    assert (report["stored_bytes"], report["full_model_bytes"]) == (40_000, 4_000_000)
    assert report["peak_memory_bytes"] > 10_000_000  # this process's RSS, sampled at report time
    json.dumps(report)  # goes into the store as JSON


def test_full_fine_tuning_flops_are_six_n_per_token():
    assert train_flops_estimate(backbone_params=N, trainable_params=N + 500, positions=10) == 6 * N * 10
    peft = train_flops_estimate(backbone_params=N, trainable_params=1000, positions=10)
    assert peft < 6 * N * 10  # a frozen backbone skips its own weight gradients


def test_forward_only_passes_add_two_n_per_position_and_survive_a_resume():
    meter = _meter()
    meter.add_forward_only(positions=torch.tensor(250))
    report = meter.report(stored_bytes=0, full_model_bytes=0)
    assert report["forward_only_positions"] == 250 and report["padded_tokens"] == 600  # trained ones apart
    assert report["train_flops_estimate"] == pytest.approx((4 * N + 2 * 10_000) * 600 + 2 * N * 250)
    restored = CostMeter(trainable_params=10_000, backbone_params=N)
    restored.load_state_dict(json.loads(json.dumps(meter.state_dict())))
    assert restored.flops_estimate() == pytest.approx(report["train_flops_estimate"])
    old_checkpoint = {k: v for k, v in meter.state_dict().items() if k != "forward_only_positions"}
    restored.load_state_dict(old_checkpoint)  # written before the counter existed: none counted
    assert restored.forward_only_positions == 0


def test_wall_time_adds_up_across_stops_and_a_resume():
    meter = _meter()
    meter.start()
    time.sleep(0.05)
    meter.stop()
    meter.stop()  # a second stop adds nothing
    first = meter.wall_time_s
    assert 0.04 < first < 1.0
    saved = json.loads(json.dumps(meter.state_dict()))  # checkpoints store it as JSON

    resumed = CostMeter(trainable_params=10_000, backbone_params=N)
    resumed.load_state_dict(saved)
    resumed.start()
    resumed.start()  # starting twice does not restart the segment
    time.sleep(0.05)
    resumed.add_batch(tokens=10, padded_tokens=10, samples=1, task="vuln")
    resumed.stop()
    report = resumed.report(stored_bytes=0, full_model_bytes=0)
    assert first + 0.04 < report["wall_time_s"] < first + 1.0
    assert report["tokens"] == 460 and report["tokens_by_task"]["vuln"] == 360


def test_state_dict_of_a_running_meter_includes_the_open_segment():
    meter = _meter()
    meter.start()
    time.sleep(0.03)
    assert meter.state_dict()["wall_time_s"] >= 0.03


def test_peak_memory_only_grows():
    meter = _meter()
    meter.peak_memory_bytes = 10**15  # an earlier, higher peak (e.g. restored from a checkpoint)
    meter.sample_memory()
    assert meter.peak_memory_bytes == 10**15


def test_sum_costs_of_single_mode_runs():
    a = _meter(trainable=10_000).report(stored_bytes=100, full_model_bytes=4_000)
    b = _meter(trainable=30_000).report(stored_bytes=300, full_model_bytes=4_000)
    a |= {"wall_time_s": 2.0, "peak_memory_bytes": 5, "shared_params": 9_000, "head_params": 1_000}
    b |= {"wall_time_s": 6.0, "peak_memory_bytes": 7, "shared_params": 29_000, "head_params": 1_000}
    total = sum_costs([a, b])
    assert total["runs"] == 2
    assert total["trainable_params"] == 40_000 and total["shared_params"] == 38_000
    assert total["stored_bytes"] == 400 and total["tokens"] == 900 and total["samples"] == 14
    flops = a["train_flops_estimate"] + b["train_flops_estimate"]
    assert total["train_flops_estimate"] == pytest.approx(flops)
    assert total["wall_time_s"] == 8.0 and total["peak_memory_bytes"] == 7
    assert total["backbone_params"] == N and total["trainable_pct"] == pytest.approx(4.0)
    assert total["tokens_per_s"] == pytest.approx(900 / 8)
    assert total["padding_fraction"] == pytest.approx(0.25)
    assert total["tokens_by_task"] == {"vuln": 700, "clone": 200}
