"""The pre-commit hook of .pre-commit-hooks.yaml, for real: pre-commit installed in a throwaway git
repository, commits going through `git commit`, the hook running `mtpeft scan` with the tiny run.

The hook repository is a git repository holding this checkout's own .pre-commit-hooks.yaml (copied
byte for byte and committed), so a change to the hook file is what this test runs. The hook used is
`mtpeft-scan-installed` (language: system): pre-commit installs nothing and needs no network; the
`mtpeft` it runs is this environment's (its bin folder first on PATH). The `mtpeft-scan` hook
(language: python) would pip-install mtpeft and torch from the network; it is checked by
`pre-commit validate-manifest` only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HOOKS_FILE = Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml"
HOOK = "mtpeft-scan-installed"
# Python functions of different shapes; the test picks the two the tiny run tells apart the most.
CANDIDATES = [
    "def evaluate(expr):\n    return eval(expr)",
    "def add(a, b):\n    return a + b",
    "def run(cmd):\n    import os\n    os.system('sh -c ' + cmd)\n    return cmd",
    "def weighted_sum(values, weights, offsets):\n    total = 0\n    for i in range(len(values)):\n"
    "        total = total + values[i] * weights[i] + offsets[i]\n    return total",
    "def copy(dst, src, n):\n    for i in range(n):\n        dst[i] = src[i]\n    return dst",
    "def greet(name):\n    print('hello', name)",
    "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value.strip()",
]


def git(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Nothing from the user's git config or ~/.cache/pre-commit; this environment's mtpeft on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    assert shutil.which("mtpeft", path=bin_dir), f"no mtpeft script in {bin_dir}: pip install -e ."
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
        "TERM": "dumb",
    }


def hook_repository(root: Path, env: dict[str, str]) -> str:
    """A git repository with this checkout's .pre-commit-hooks.yaml; returns its commit."""
    root.mkdir()
    shutil.copyfile(HOOKS_FILE, root / ".pre-commit-hooks.yaml")
    git(root, env, "init", "-q")
    git(root, env, "add", ".pre-commit-hooks.yaml")
    assert git(root, env, "commit", "-q", "-m", "hooks").returncode == 0
    return git(root, env, "rev-parse", "HEAD").stdout.strip()


def split_threshold(run) -> tuple[str, str, float]:
    """(clean code, risky code, a probability between them): the two candidates whose P(vulnerable)
    differ the most, so a threshold at their midpoint makes one a finding and not the other."""
    answers = run.analyze(CANDIDATES, tasks=["vulnerability"])
    positive = [a["vulnerability"]["probabilities"]["1"] for a in answers]
    order = sorted(range(len(positive)), key=positive.__getitem__)
    low, high = order[0], order[-1]
    # The scan's probabilities match the API's within 1e-5 (tests/api/test_scan_cli.py); far more margin here.
    assert positive[high] - positive[low] > 0.02, positive
    return CANDIDATES[low], CANDIDATES[high], (positive[low] + positive[high]) / 2


def test_the_hook_blocks_a_commit_with_a_finding_and_lets_clean_code_through(run, run_dir, tmp_path, env):
    clean, risky, threshold = split_threshold(run)
    rev = hook_repository(tmp_path / "hooks", env)
    project = tmp_path / "project"
    project.mkdir()
    level = f"{threshold:.6f}"
    (project / ".pre-commit-config.yaml").write_text(
        "repos:\n"
        f"  - repo: {tmp_path / 'hooks'}\n"
        f"    rev: {rev}\n"
        "    hooks:\n"
        f"      - id: {HOOK}\n"
        # Every finding is an error at this threshold; no clone pairs, so the level is the finding's.
        # --include-unfamiliar: this hand-written Python is unlike the tiny run's templated fixtures.
        f"        args: [--run, '{run_dir}', --threshold, '{level},{level},{level}', --no-clones, "
        "--include-unfamiliar]\n"
        "        verbose: true\n",
        encoding="utf-8",
    )
    (project / "clean.py").write_text(clean + "\n", encoding="utf-8")
    (project / "notes.md").write_text("# Notes\n\n```python\n" + risky + "\n```\n", encoding="utf-8")
    git(project, env, "init", "-q")
    installed = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    git(project, env, "add", ".pre-commit-config.yaml", "clean.py", "notes.md")
    first = git(project, env, "commit", "-m", "clean code and notes")
    shown = first.stdout + first.stderr
    assert first.returncode == 0, shown
    assert "Passed" in shown and "No findings at or above the note threshold." in shown
    # Only clean.py reached mtpeft: notes.md (markdown) was not passed, or it would be a skipped file.
    assert "1 file, 1 unit (1 function, 0 methods, 0 tests)" in shown and "0 files skipped" in shown

    (project / "risky.py").write_text(risky + "\n", encoding="utf-8")
    git(project, env, "add", "risky.py")
    second = git(project, env, "commit", "-m", "risky code")
    shown = second.stdout + second.stderr
    assert second.returncode != 0, shown
    assert "Failed" in shown and "exit code: 1" in shown
    name = risky.split("(")[0].removeprefix("def ")
    assert "Findings (1)" in shown and "risky.py:1" in shown and f"{name} (function)" in shown
    assert "1 result(s) at level error or above (--fail-on error)" in shown
    assert git(project, env, "rev-list", "--count", "HEAD").stdout.strip() == "1"  # the commit was refused

    markdown_only = subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--files", "notes.md"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert markdown_only.returncode == 0 and "(no files to check)Skipped" in markdown_only.stdout


def test_the_hooks_file_is_a_valid_manifest(env):
    checked = subprocess.run(
        [sys.executable, "-m", "pre_commit", "validate-manifest", str(HOOKS_FILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
