"""The getting-started and Python API pages run as written, against a tiny trained run.

The fixture stands in for what `make demo` leaves behind: `demo_workspace/runs/demo-multi-<hash>`, a
shared LoRA run with the demo's three tasks (py-defect, py-clone, py-search) on tiny-bert, plus a folder
of "your code" (`path/to/your-code`). The pages' Python blocks execute in that folder, and their
`mtpeft ...` commands run for real through the CLI's entry point, so a renamed option, command, method
or task name fails here, not in a reader's terminal. Every mtpeft command on every other page (and in
the README) is at least parsed by the real CLI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import docs_blocks
import pytest

REPO = Path(__file__).resolve().parents[2]
EXECUTED_PAGES = ("docs/getting-started.md", "docs/using/python.md")
# Blocks deliberately not run ({.skip}), by page: changing one means changing this list, so nothing is
# skipped silently. getting-started's first block is `git clone` + `make demo` + `make test` (minutes).
EXPECTED_SKIPS = {"docs/getting-started.md": 1, "docs/using/python.md": 0}

YOUR_CODE = {
    "files.py": (
        "def read_config(path):\n    with open(path) as f:\n        return f.read()\n\n\n"
        "def load_config(name):\n    with open(name) as handle:\n        return handle.read()\n\n\n"
        "def add(a, b):\n    return a + b\n"
    ),
    "util/strings.py": "def shout(text):\n    return text.upper() + '!'\n",
}


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a demo-like workspace with one trained tiny run, and a folder of code to scan."""
    from mtpeft.config import validate_config
    from mtpeft.data.fixtures import write_fixture_dataset
    from mtpeft.training.run import run_training

    root = tmp_path_factory.mktemp("newcomer")
    data = root / "fixture-data"
    sources = {"py-defect": "devign-jsonl", "py-clone": "bigclonebench", "py-search": "codesearchnet"}
    config = {
        "name": "demo-multi",
        "model": "tiny-bert",
        "method": "lora",
        "tasks": [
            {"task": task, "data": str(write_fixture_dataset(fmt, data, n_per_split=12)), "batch_size": 4}
            for task, fmt in sources.items()
        ],
        "max_steps": 4,
        "eval_every": 4,
        "save_every": 4,
        "workspace": str(root / "demo_workspace"),
        "seed": 0,
        "baselines": False,
    }
    run_training(validate_config(config), progress=False)
    for name, text in YOUR_CODE.items():
        path = root / "path" / "to" / "your-code" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def executed(newcomer: Path) -> dict[str, docs_blocks.PageResult]:
    """Each executed page run once, in the newcomer's folder, in order (the Python page reuses nothing
    of the getting-started page's, but both leave their files there for the checks below)."""
    here = Path.cwd()
    os.chdir(newcomer)
    try:
        return {
            page: docs_blocks.run_page((REPO / page).read_text(encoding="utf-8"), page)
            for page in EXECUTED_PAGES
        }
    finally:
        os.chdir(here)


@pytest.mark.parametrize("page", EXECUTED_PAGES)
def test_page_runs_as_written(page: str, executed: dict[str, docs_blocks.PageResult]) -> None:
    result = executed[page]
    assert not result.failures, "\n".join(result.failures)
    assert result.ran, f"{page} has no block that runs"
    assert len(result.skipped) == EXPECTED_SKIPS[page], (
        f"{page}: blocks marked {{.skip}} at {result.skipped}; expected {EXPECTED_SKIPS[page]} "
        "(update EXPECTED_SKIPS only for a block that cannot run in a test)"
    )


def test_getting_started_scan_writes_a_sarif_file(newcomer: Path, executed) -> None:
    """The page's path ends in a SARIF 2.1.0 file of the reader's folder: check the file, not just exit 0."""
    assert not executed["docs/getting-started.md"].failures
    sarif = json.loads((newcomer / "your-code.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    scanned = {
        location["physicalLocation"]["artifactLocation"]["uri"]
        for run in sarif["runs"]
        for result in run["results"]
        for location in result["locations"]
    }
    assert scanned <= {"files.py", "util/strings.py"}, scanned
    assert (newcomer / "my-index").is_dir()  # the Python page's `mtpeft index` block


def test_every_documented_mtpeft_command_parses() -> None:
    """Every `mtpeft ...` of every shell block on the site and in the README, run or not."""
    pages = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
    failures, count = [], 0
    for path in pages:
        page = str(path.relative_to(REPO))
        found = docs_blocks.blocks(path.read_text(encoding="utf-8"), page)
        count += sum(len(docs_blocks.commands(b)) for b in found if b.language in docs_blocks.SHELL_LANGUAGES)
        failures += docs_blocks.check_commands(found)
    assert not failures, "\n".join(failures)
    assert count >= 40, f"only {count} mtpeft commands found: is the collector still reading the pages?"


RENAMED = """# A page with mistakes

```bash
mtpeft data formats
```

Scan it:

```bash
mtpeft scan src/ \\
    --run RUN_DIR --formatt sarif
```

```python
import mtpeft
run = mtpeft.lode("workspace/runs/x")
```

```bash {.skip}
mtpeft scann src/
```

```bash
make demo
```
"""


def test_collector_reports_a_renamed_option_with_page_and_line(tmp_path: Path, monkeypatch) -> None:
    """The check failing once, on purpose: a misspelt option, function and command are each reported
    with the page and the line they are on; a skipped block is counted, and its command still parsed."""
    monkeypatch.chdir(tmp_path)
    result = docs_blocks.run_page(RENAMED, "docs/broken.md")
    failures = "\n".join(result.failures)
    assert (
        "docs/broken.md:10: mtpeft scan src/ --run RUN_DIR --formatt sarif: No such option: --formatt"
        in failures
    )
    assert "docs/broken.md:16: AttributeError: module 'mtpeft' has no attribute 'lode'" in failures
    assert "docs/broken.md:20: mtpeft scann src/: No such command 'scann'" in failures
    assert "docs/broken.md:24: `make demo` is not an mtpeft command; mark the block {.skip}" in failures
    assert len(result.failures) == 4, failures
    assert result.skipped == ["docs/broken.md:19"]
    assert result.ran == ["docs/broken.md:3", "docs/broken.md:9", "docs/broken.md:14", "docs/broken.md:23"]
