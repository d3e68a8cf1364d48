"""Fixtures shared by the training tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread: on shared cores more threads only contend (a 16-step
    tiny-bert run measured 1.3 s on one thread, 9-25 s on the default two with other jobs running).
    Runs compared with each other for equality all happen inside one module, on the same setting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
