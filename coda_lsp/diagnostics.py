"""What the server holds, for the `coda/stats` request: caches against their bounds, process memory.

Why a request and not a log line: the soak benchmark and the suite's short soak read these numbers
through the real server while it serves, so a cache that outgrows its bound fails a test instead of
showing up as RSS a week later. `CODA_LSP_TRACEMALLOC=<frames>` starts tracemalloc at server start;
`coda/stats {"tracemalloc": true}` then returns the biggest Python allocation growths since the first
such call, and `{"objects": true}` the most numerous live object types (both cost a full heap walk,
so only on request).
"""

from __future__ import annotations

import ctypes
import gc
import os
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any, Optional

_baseline: Optional[tracemalloc.Snapshot] = None


def start_tracemalloc_from_env() -> None:
    frames = os.environ.get("CODA_LSP_TRACEMALLOC", "")
    if frames.isdigit() and int(frames) > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(int(frames))


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_mb() -> Optional[dict[str, float]]:
    """glibc's own accounting (mallinfo2): `in_use` vs `free_in_heap` tells fragmentation from a leak."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    m = fn()
    mb = 1 / 2**20
    return {"heap": round(m.arena * mb, 1), "mmapped": round(m.hblkhd * mb, 1), "in_use": round(m.uordblks * mb, 1),
            "free_in_heap": round(m.fordblks * mb, 1), "releasable_top": round(m.keepcost * mb, 1)}


def object_counts(top: int = 25) -> dict[str, int]:
    gc.collect()
    return dict(Counter(type(o).__qualname__ for o in gc.get_objects()).most_common(top))


def tracemalloc_growth(top: int = 25) -> Optional[list[str]]:
    """The biggest growths of Python allocations (by traceback) since the first call; None when off."""
    global _baseline
    if not tracemalloc.is_tracing():
        return None
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if _baseline is None:
        _baseline = snap
        return []
    return [str(s) for s in snap.compare_to(_baseline, "traceback")[:top]]


def process_stats(objects: bool = False, traces: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_mb": round(rss_mb(), 1), "malloc_mb": malloc_mb(), "gc_objects": len(gc.get_objects())}
    if objects:
        out["object_counts"] = object_counts()
    if traces:
        out["tracemalloc_growth"] = tracemalloc_growth()
    return out
