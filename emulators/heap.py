"""Keep large request bodies on the heap in emulator processes (glibc only; a no-op elsewhere);
shared by the HEC and Logs Ingestion emulator commands.

An emulator inflates a gzip body of up to about 1 MB per request. glibc serves allocations
that large with a fresh ``mmap`` each time, so every request page-faults its whole output in
(about 250 faults per megabyte) and unmaps it again: a third of the Logs Ingestion emulator's
CPU per call in ``bench/bench_sentinel.py``. Raising the mmap and trim thresholds keeps such
buffers in the heap and reuses them. Behaviour is unchanged; only memory reuse differs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_large_buffers_on_heap(size: int = 32 * 1024 * 1024) -> bool:
    """Serve allocations up to ``size`` bytes from the heap and keep up to twice that free
    there; True when glibc accepted it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * size))
