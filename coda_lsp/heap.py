"""Give the pages of freed model buffers back to the OS when the model worker goes idle (glibc).

Why: the soak benchmark showed the server's RSS growing while everything it keeps stayed bounded
(caches, documents, Python objects flat) and glibc's own count of bytes in use stayed flat too: the
growth was glibc's *free* heap (`mallinfo2().fordblks`). torch's CPU tensors of a few MB (logits over
a 152k vocab, attention scores over the context) are first mmapped, but glibc then raises its mmap
threshold to the largest size freed (up to 32 MiB), so later buffers come from the heap; freed
buffers of ever-changing sizes leave holes it keeps, and the trim threshold rises with them. One
`malloc_trim(0)` per idle period returns those free pages (interior holes included) at the cost of
faulting them in again on the next request, which is far cheaper than pinning the mmap threshold
(an mmap, page faults and munmap for every large tensor of every step).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Optional

log = logging.getLogger(__name__)
_libc: Optional[ctypes.CDLL] = None
_checked = False


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _checked
    if not _checked:
        _checked = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            lib.malloc_trim   # only glibc has it
            _libc = lib
        except (OSError, AttributeError):
            log.debug("no glibc malloc_trim: freed heap pages stay with the allocator")
    return _libc


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True when some were released (False off glibc)."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
