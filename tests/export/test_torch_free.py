"""`pip install 'mtpeft[onnx]'`: an export folder answered in a virtualenv where torch is not installed.

The virtualenv gets mtpeft itself (built from this checkout, `--no-deps`) and only what the export's
runtime path imports: onnxruntime and tokenizers, numpy, and the light base dependencies of the CLI and
the scanner, each at the version this test process runs (so the two sides differ by torch alone). The
wheels come from PyPI once and are kept in pytest's cache folder (.pytest_cache/d/torch-free-wheels), so
later runs install offline. Then, inside it: `mtpeft.load(EXPORT).analyze(...)` and `mtpeft scan --run
EXPORT` give the PyTorch run's labels, nothing imports torch, and a run directory is refused with the
one install hint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What `mtpeft.load(EXPORT)` and `mtpeft scan` import, by distribution name, dependencies included.
# tokenizers' own dependency huggingface-hub is left out: the runtime never calls from_pretrained, the
# one place tokenizers imports it. scipy, scikit-learn and the server's packages are base dependencies
# that this path does not import (`--precision` and `mtpeft serve` do).
RUNTIME = [
    "onnxruntime", "flatbuffers", "protobuf", "packaging", "numpy", "tokenizers",
    "typer", "click", "shellingham", "annotated-doc", "typing_extensions", "rich", "markdown-it-py", "mdurl",
    "pygments", "tqdm", "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "pyyaml",
    "psutil", "jinja2", "markupsafe", "tree-sitter", "tree-sitter-python", "tree-sitter-java",
    "tree-sitter-c", "tree-sitter-cpp",
]  # fmt: skip
BUILD = ["setuptools"]  # builds mtpeft in the virtualenv without fetching a build environment
CODE = {
    "util.py": "def read_config(path):\n    with open(path) as f:\n        return f.read()\n\n"
    "def run(cmd):\n    import os\n    return os.system(cmd)\n",
    "calc.c": "int add(int a, int b) { return a + b; }\nvoid copy(char *s) { char b[8]; strcpy(b, s); }\n",
    "test_util.py": "def test_read(tmp_path):\n    assert read_config(tmp_path) == ''\n",
}
ANALYZE = """
import json, sys
import mtpeft
run = mtpeft.load(sys.argv[1])
answers = run.analyze(json.loads(sys.argv[2]))
print(json.dumps({"answers": answers, "torch": [m for m in sys.modules if m.split(".")[0] == "torch"]}))
"""


def _pip(*args: str | Path) -> subprocess.CompletedProcess:
    """This process's pip (the venv is made without one: faster), its output kept for the message."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _wheelhouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("torch-free-wheels") if cache is not None else tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="module")
def venv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with mtpeft, onnxruntime, tokenizers and the light dependencies: no torch."""
    root = tmp_path_factory.mktemp("torch-free") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    pins = [f"{name}=={metadata.version(name)}" for name in RUNTIME + BUILD]
    wheels = _wheelhouse(request, tmp_path_factory)
    offline = ["--python", python, "install", "--no-deps", "--no-index", "--find-links", wheels, *pins]
    if _pip(*offline).returncode != 0:  # first run on this machine: fetch the wheels once
        fetched = _pip("download", "--no-deps", "--only-binary=:all:", "--dest", wheels, *pins)
        if fetched.returncode != 0:
            pytest.skip(f"cannot fetch the runtime's wheels from the package index: {fetched.stderr[-600:]}")
        installed = _pip(*offline)
        assert installed.returncode == 0, installed.stderr
    # Built from a copy: setuptools writes build/ and an egg-info beside the sources it builds.
    source = tmp_path_factory.mktemp("mtpeft-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = _pip("--python", python, "install", "--no-deps", "--no-build-isolation", "--no-index", source)
    assert built.returncode == 0, built.stderr
    return root


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH (which points at the checkout's src/): the venv's own mtpeft."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_torch_is_not_installed_in_the_virtualenv(venv):
    probe = subprocess.run(
        [venv / "bin" / "python", "-c", "import torch"], capture_output=True, text=True, env=_env()
    )
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr


def test_load_and_analyze_without_torch_give_the_pytorch_runs_labels(venv, lora_pair, lora_export):
    reference, _ = lora_pair
    codes = list(CODE.values()) + ["x = 1"]
    done = subprocess.run(
        [venv / "bin" / "python", "-c", ANALYZE, lora_export, json.dumps(codes)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["torch"] == []
    for got, want in zip(out["answers"], reference.analyze(codes), strict=True):
        assert {t: a["label"] for t, a in got.items()} == {t: a["label"] for t, a in want.items()}
        for task, answer in got.items():
            assert abs(answer["probability"] - want[task]["probability"]) <= 1e-4


def test_scan_without_torch_gives_the_pytorch_runs_labels(venv, lora_run, lora_export, tmp_path):
    import mtpeft
    from mtpeft.scan import scan_tree

    for name, text in CODE.items():
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    done = subprocess.run(
        [venv / "bin" / "mtpeft", "scan", tmp_path / "src", "--run", lora_export, "--format", "json"]
        + ["--no-progress", "--out", tmp_path / "scan.json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    units = json.loads((tmp_path / "scan.json").read_text())["units"]
    want = scan_tree([tmp_path / "src"], mtpeft.load(lora_run, device="cpu"), progress=False)
    labels = {(u["path"], u["name"]): {t: a["label"] for t, a in u["answers"].items()} for u in units}
    assert len(labels) == len(want.units) > 0
    assert labels == {
        (unit.path, unit.name): {t: a.label for t, a in answers.items()}
        for unit, answers in zip(want.units, want.answers, strict=True)
    }


def test_a_run_directory_without_torch_is_one_error_naming_the_extra(venv, lora_run, tmp_path):
    (tmp_path / "a.py").write_text("def f(x):\n    return eval(x)\n")
    done = subprocess.run(
        [venv / "bin" / "mtpeft", "scan", tmp_path / "a.py", "--run", lora_run, "--no-progress"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: loading a run directory needs")
    assert "pip install 'mtpeft[train]'" in done.stderr and "Traceback" not in done.stderr
