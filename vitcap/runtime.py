"""Process-wide settings for training runs started from vitcap's command lines.

``keep_freed_memory``: glibc's ``malloc`` hands every block over its mmap threshold (128 KiB at first, raised
by the sizes freed later, up to 32 MiB) straight back to the kernel on ``free`` and gives the top of the heap back
once 128 KiB or more is free, so a CPU training step that allocates and frees the same megabyte-sized
activations each step page-faults them in again every time. Fixing the mmap threshold at its 32 MiB maximum and
keeping up to 256 MiB free at the top of the heap lets the next step reuse the memory: the Fashion-MNIST
recipe's steps ran 1.175x faster on the 2-core development machine (``bench/cpu_allocator.py``, docs/BENCHMARKS.md). What jemalloc
or tcmalloc would do via ``LD_PRELOAD``, without a new dependency; the price is that up to 256 MiB of freed memory
stays in the process. ``VITCAP_MALLOC=system`` leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's malloc so freed training buffers are reused instead of returned to the kernel (see above).

    Returns:
        Whether the settings were applied: False off Linux/glibc, or when ``VITCAP_MALLOC=system``.
    """
    if os.environ.get("VITCAP_MALLOC", "tuned") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
