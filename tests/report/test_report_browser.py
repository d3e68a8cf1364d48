"""The HTML report as a reader sees it: rendered by headless Chromium, DOM and pixels checked.

Needs Debian's `chromium` (`apt-get install -y chromium`). When it is missing the test tries to install it
(as root, with apt-get: tests/browser.py); where it cannot, the test is skipped and says why.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from browser import chromium_or_skip
from mtpeft.report.build import build_report
from mtpeft.study.synthetic import synthetic_spec, synthetic_store

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = "--window-size=1280,4000"


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture(scope="module")
def html_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    synthetic_store(synthetic_spec(workspace=root, methods=["lora"], seeds=[0]))
    return build_report(root, root / "report").html


def _chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_rendered_dom_holds_the_heatmap_and_the_tables(chromium, html_report, tmp_path):
    done = _chromium(chromium, tmp_path / "profile", "--dump-dom", html_report.as_uri())
    assert done.returncode == 0, done.stderr[-500:]
    dom = done.stdout
    assert 'data-kind="heatmap"' in dom and 'src="data:image/png;base64,' in dom
    assert dom.count("<table>") >= 8
    for heading in ("Single-task vs multi-task", "Task transfer (pairs)", "Grouping recommendation", "Cost"):
        assert f"<h2>{heading}</h2>" in dom


def test_screenshot_shows_the_page_and_the_heatmap_colours(chromium, html_report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    done = _chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", WINDOW, html_report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-500:]
    pixels = imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (4000, 1280)
    not_white = (pixels < 0.9).any(axis=2).mean()
    assert not_white > 0.05, "the screenshot is (nearly) blank"
    r, g, b = (pixels[..., k] for k in range(3))
    # The heatmap's negative cells (RdBu's dark reds); no other element of the page is that red.
    heat_red = (r > 0.5) & (g < 0.25) & (b < 0.3)
    assert heat_red.sum() > 2000, "no heatmap cells visible in the first screen"
    assert np.unique(pixels.reshape(-1, 3).round(2), axis=0).shape[0] > 50  # text, tables, plots
