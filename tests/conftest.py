"""Shared test fixtures: where ../shared/data is, and skipping when it is absent."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTPEFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The Ctrl-C tests (MTPEFT_INTERRUPT_AT_STEP, servers stopped with SIGINT) need SIGINT handled. A test run
# started in the background of a non-interactive shell (`make test &`) inherits SIGINT *ignored*, and so
# does every process it starts: Ctrl-C would then do nothing and those tests fail for a reason that is
# not the code's. Python's own handler here; child processes then start with SIGINT at its default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:  # Property-based (fuzz) tests: a bounded count in `make test`, many more in `make fuzz`.
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    )
    settings.register_profile(
        "fuzz", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("MTPEFT_FUZZ_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev dependency; the fuzz tests import it themselves
    pass


@pytest.fixture
def shared_data() -> Path:
    """The real benchmark data folder; tests using it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
