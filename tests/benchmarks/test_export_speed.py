"""The pure helpers of benchmarks/export_speed.py: install sizes from metadata, agreement, the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "export_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("export_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["export_speed"] = module
    spec.loader.exec_module(module)
    return module


es = _load()


def test_each_runtime_adds_its_own_packages_beyond_the_base_install():
    sizes = es.install_sizes()
    torch_side, onnx_side = sizes["pytorch"]["distributions"], sizes["onnx-fp32"]["distributions"]
    assert {"torch", "transformers", "peft"} <= set(torch_side) and "onnxruntime" not in torch_side
    assert "onnxruntime" in onnx_side and "torch" not in onnx_side
    assert "numpy" not in torch_side | onnx_side  # a base dependency: counted for neither
    assert sizes["pytorch"]["mib"] > sizes["onnx-fp32"]["mib"] > 0


def test_label_agreement_is_the_share_of_equal_labels_per_task():
    reference = {"vuln": ["0", "1", "1", "0"], "cx": ["n", "n"]}
    assert es.label_agreement(reference, {"vuln": ["0", "1", "0", "0"], "cx": ["n", "n"]}) == {
        "vuln": 0.75,
        "cx": 1.0,
    }


def test_the_table_has_a_row_per_setting_relative_to_pytorch():
    analyze = {
        s: {"snippets_per_s": speed, "peak_rss_mib": 100.0, "label_agreement": {"vuln": 1.0}}
        for s, speed in zip(es.SETTINGS, (10.0, 25.0, 40.0), strict=True)
    }
    install = {s: {"mib": 50.0} for s in es.SETTINGS}
    lines = es.table({"analyze": analyze, "install": install, "scan": None}).splitlines()
    assert len(lines) == 2 + len(es.SETTINGS)
    assert "| onnx-fp32 | 25.0 | 2.50x |" in lines[3] and "| onnx-int8 | 40.0 | 4.00x |" in lines[4]
