"""Finding Debian's Chromium for the browser tests (tests/report, tests/serve), installing it when we can.

Import it as `from browser import chromium_or_skip` (tests/ is on sys.path: its conftest.py is there).
When `chromium` is missing the first call tries `apt-get install -y chromium` once (as root only); where it
cannot, every caller is skipped with the reason and the command that installs it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

INSTALL = "apt-get install -y chromium"


def find_chromium() -> str | None:
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def _try_install() -> str:
    """'' when installed, else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"{' '.join(command)}: {err}"
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-200:]}"
    return ""


@functools.cache
def _find_or_install() -> tuple[str | None, str]:
    """(path, '') or (None, why); apt-get runs at most once per test session."""
    found = find_chromium()
    if found is not None:
        return found, ""
    why = _try_install()
    found = find_chromium()
    return found, "" if found else why or "apt-get ran but no chromium is on PATH"


def chromium_or_skip() -> str:
    """The chromium executable, or skip the calling test saying why and how to install it."""
    found, why = _find_or_install()
    if found is None:
        pytest.skip(f"chromium is not installed and could not be installed ({why}); {INSTALL}")
    return found
