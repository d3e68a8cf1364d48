"""Keep a long-running server's resident memory flat: give freed heap pages back after each batch.

Every batch frees activations of a different shape. glibc's malloc keeps such freed chunks in its heap
(its dynamic mmap threshold moves large blocks onto the heap after the first frees), so a server's RSS
creeps up under varied load: measured here, 644 -> 852 MiB over 60 s of random batches with minilm, and
still rising. `malloc_trim(0)` after each batch returns the free pages to the system: the same load
stayed at 611 -> 622 MiB at the same throughput (208 vs 212 batches in 60 s). Raising
MALLOC_MMAP_THRESHOLD_ also flattened it but cost about 30% throughput (page faults on every large
tensor). No Python library exposes malloc_trim, hence ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def heap_trimmer() -> Callable[[], None] | None:
    """glibc's malloc_trim(0) as a no-argument call, or None where the C library has none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)
