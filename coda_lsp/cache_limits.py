"""Every bound on what the server keeps between requests, in one place, and the registry that enforces it.

Editors keep the server alive for days, so anything kept across requests needs a bound in entries
*and* bytes (one huge file must not fill a cache sized for lines) and must let go of a document when
it closes. Each cache implements `SizedCache` (`__len__`, `size_bytes()`, `drop(uri)`, `clear()`),
evicts least-recently-used entries at its bounds, and is registered in the service's `CacheSet`, which
closes documents in all of them at once and reports sizes against bounds (`coda/stats`). A new cache —
e.g. a per-document context K/V store — plugs in by taking its bounds from `CacheLimits` and
registering itself; nothing else changes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, Iterable, Optional, Protocol

MiB = 1 << 20


@dataclass(frozen=True)
class CacheLimits:
    """Entry and byte bounds of every cache (defaults sized for a workstation editor session)."""
    # final items by exact model input; entries are a few short strings, so 256 cost ~0.2 MiB
    result_entries: int = 256
    result_bytes: int = 4 * MiB
    # one entry per document (the last completion and 2,000-char windows around it), ~16 KiB each
    type_through_entries: int = 64
    type_through_bytes: int = 4 * MiB
    # speculative runs waiting for or on the worker; each holds a fork of its document (text + tree)
    speculations: int = 4
    # per-document context K/V (prefix/suffix keys and values kept across requests): the big one. Its byte
    # bound is the `contextCacheMb` setting (ServerOptions.context_cache_mb), so it is not restated here
    context_kv_entries: int = 16


class SizedCache(Protocol):
    """What a bounded cache exposes to the registry (its bounds are its own attributes)."""
    max_entries: int
    max_bytes: Optional[int]          # None: entries are bounded, bytes only reported
    def __len__(self) -> int: ...
    def size_bytes(self) -> int: ...
    def drop(self, uri: str) -> None: ...   # everything kept for this document
    def clear(self) -> None: ...


def text_bytes(texts: Iterable[Any]) -> int:
    """Memory of some strings as Python holds them (object headers included). A gate `Candidate` (token
    pieces with their confidence) counts each piece's text plus its span object and float."""
    total = 0
    for t in texts:
        spans = getattr(t, "spans", None)
        total += sys.getsizeof(t) if spans is None else 64 + sum(sys.getsizeof(sp.text) + 72 for sp in spans)
    return total


class CacheSet:
    """The service's caches by name: close a document in all of them, report sizes against bounds."""

    def __init__(self, **caches: SizedCache) -> None:
        self._caches: dict[str, SizedCache] = dict(caches)

    def register(self, name: str, cache: SizedCache) -> None:
        self._caches[name] = cache

    def get(self, name: str) -> Optional[SizedCache]:
        return self._caches.get(name)

    def drop(self, uri: str) -> None:
        for cache in self._caches.values():
            cache.drop(uri)

    def clear(self) -> None:
        for cache in self._caches.values():
            cache.clear()

    def stats(self) -> dict[str, dict]:
        return {name: {"entries": len(c), "bytes": c.size_bytes(), "max_entries": c.max_entries,
                       "max_bytes": c.max_bytes} for name, c in self._caches.items()}

    def over_bounds(self) -> list[str]:
        """Names of caches past a bound (empty when every cache holds its bounds)."""
        return [name for name, s in self.stats().items()
                if s["entries"] > s["max_entries"] or (s["max_bytes"] is not None and s["bytes"] > s["max_bytes"])]


class BoundedLru:
    """An LRU map bounded in entries and bytes, each entry tagged with the document it was made for.

    The base of the server's caches (they add their own typed put/get on `store`/`lookup`). The caller gives each entry's size (it knows what the value holds); an entry larger than the whole
    byte bound is not kept at all rather than evicting everything else.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._data: OrderedDict[str, tuple[str, object, int]] = OrderedDict()   # key -> (uri, value, bytes)
        self._bytes = 0
        self.max_entries, self.max_bytes = max_entries, max_bytes

    def lookup(self, key: str) -> Optional[object]:
        hit = self._data.get(key)
        if hit is None:
            return None
        self._data.move_to_end(key)
        return hit[1]

    def store(self, key: str, uri: str, value: object, nbytes: int) -> None:
        self.discard(key)
        if nbytes > self.max_bytes or self.max_entries < 1:
            return
        self._data[key] = (uri, value, nbytes)
        self._bytes += nbytes
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= self._data.popitem(last=False)[1][2]

    def discard(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= old[2]

    def drop(self, uri: str) -> None:
        for key in [k for k, (u, _v, _n) in self._data.items() if u == uri]:
            self.discard(key)

    def clear(self) -> None:
        self._data.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def size_bytes(self) -> int:
        return self._bytes
