"""Process-level memory tuning for long streaming runs.

glibc raises its mmap threshold each time a large block is freed, after which large blocks (image
chunks, the archive's growing indexes) come from the heap; as they grow and move they leave holes
that transient allocations only partly fill, and peak memory creeps up with the page count. A
fixed threshold keeps large blocks in mmap, returned to the system as soon as they are freed.

glibc also gives threads up to eight heaps (arenas) per core, each keeping its own free memory;
libvips, anyio and the output thread spread allocations over many of them. One arena per core is
as many as can be busy at once.

Measured on JPEG transcoding (``benchmarks.compare`` row 5), peak RSS at 100 / 2,000 parts:
64 / 76 MB untuned, 62 / 68 MB with the fixed threshold, 57 / 61 MB with one arena per core as
well (2 cores). Only the CLI calls this: a library should not retune its host process.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's M_MMAP_THRESHOLD and M_ARENA_MAX parameters of mallopt(3)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: blocks from this size on are mmapped (glibc's initial default, kept fixed)
MMAP_THRESHOLD = 128 * 1024


def cores() -> int:
    """The cores this process may run on (its CPU affinity), for arenas and worker threads alike.
    It lives here, not in the image stage, so the CLI can call it without loading libvips."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def bound_heap() -> bool:
    """Fix glibc's mmap threshold and allow one arena per core; False (nothing done) on other C
    libraries. Call it before starting threads: arenas already made stay."""
    try:  # the process's own symbols, the C library's among them: find_library("c") would run
        # ldconfig in a child process, at every start of every command (a tenth of --version's time)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, cores()))
