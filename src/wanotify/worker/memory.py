"""Keeping a long-running worker's resident memory flat (glibc only; a no-op elsewhere).

A threaded Python process on glibc gets one malloc arena per thread that ever allocated,
and freed memory in them is rarely returned to the system: RSS creeps up over hours even
though Python's own heap does not grow. Two arenas are plenty for one event loop and a
few database threads; ``malloc_trim`` hands free pages back after each sweep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim  # noqa: B018  (glibc has it; musl does not)
        _libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        _libc = None


def limit_arenas(n: int = 2) -> bool:
    """Cap malloc arenas (call before threads start). True if it took effect."""
    return bool(_libc is not None and _libc.mallopt(M_ARENA_MAX, n) == 1)


def trim() -> bool:
    """Return free heap pages to the system. True if any were released."""
    return bool(_libc is not None and _libc.malloc_trim(0) == 1)
