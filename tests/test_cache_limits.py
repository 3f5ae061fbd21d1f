"""Every cache holds its bounds (entries and bytes) and lets go of a document when it closes."""

from __future__ import annotations

import asyncio

from coda_lsp.cache_limits import BoundedLru, CacheLimits, CacheSet, text_bytes
from coda_lsp.scheduler import ResultCache, Scheduler, Speculations, TypeThroughCache
from coda_lsp.service import CompletionService


def test_bounded_lru_evicts_the_least_recent_at_its_entry_bound():
    lru = BoundedLru(max_entries=3, max_bytes=10_000)
    for i in range(3):
        lru.store(f"k{i}", "u", i, 10)
    lru.lookup("k0")                          # k0 becomes the most recent: k1 goes first
    lru.store("k3", "u", 3, 10)
    assert len(lru) == 3 and lru.lookup("k1") is None and lru.lookup("k0") == 0
    assert lru.size_bytes() == 30


def test_bounded_lru_evicts_at_its_byte_bound_and_never_keeps_an_entry_bigger_than_the_bound():
    lru = BoundedLru(max_entries=100, max_bytes=1000)
    for i in range(5):
        lru.store(f"k{i}", "u", i, 300)
    assert lru.size_bytes() <= 1000 and len(lru) == 3 and lru.lookup("k4") == 4
    lru.store("huge", "u", "x", 1001)
    assert lru.lookup("huge") is None and len(lru) == 3
    lru.store("k4", "u", 44, 100)               # replacing an entry re-counts its bytes
    assert lru.size_bytes() == 700 and lru.lookup("k4") == 44


def test_type_through_cache_evicts_at_its_entry_and_byte_bounds():
    text = "x = 1\n" * 2000
    by_entries = TypeThroughCache(max_entries=4, max_bytes=10**9)
    for i in range(10):
        by_entries.put(f"file:///{i}.py", text, 600, 600, ["foo()"])
    assert len(by_entries) == 4 and by_entries.get("file:///9.py", text, 600) == (["foo()"], 0)
    assert by_entries.get("file:///0.py", text, 600) is None
    one = by_entries.size_bytes() // 4
    by_bytes = TypeThroughCache(max_entries=100, max_bytes=3 * one)
    for i in range(10):
        by_bytes.put(f"file:///{i}.py", text, 600, 600, ["foo()"])
    assert len(by_bytes) == 3 and by_bytes.size_bytes() <= 3 * one


def test_result_cache_evicts_at_its_entry_and_byte_bounds():
    cache = ResultCache(max_entries=5, max_bytes=10**9)
    for i in range(8):
        cache.put(ResultCache.key(i), [f"item {i}"], "file:///a.py")
    assert len(cache) == 5 and cache.get(ResultCache.key(0)) is None and cache.get(ResultCache.key(7)) == ["item 7"]
    big = ["y" * 10_000]
    cache = ResultCache(max_entries=1000, max_bytes=3 * text_bytes(big) + 500)
    for i in range(8):
        cache.put(ResultCache.key(i), big, "file:///a.py")
    assert len(cache) == 3 and cache.size_bytes() <= cache.max_bytes


def test_speculations_are_bounded_in_count_and_a_closed_document_resolves_its_runs_to_none():
    async def go():
        spec = Speculations(max_entries=2)
        a = spec.start("k1", "file:///a.py", 100)
        b = spec.start("k2", "file:///b.py", 100)
        assert a is not None and b is not None
        assert spec.start("k3", "file:///a.py", 100) is None          # at the bound
        assert spec.start("k1", "file:///a.py", 100) is None          # already running
        spec.drop("file:///a.py")
        assert a.done() and a.result() is None and not b.done() and len(spec) == 1
        spec.finish("k1", ["late"])                                   # the run ending later is harmless
        spec.finish("k2", ["t"])
        assert b.result() == ["t"] and len(spec) == 0 and spec.size_bytes() == 0
    asyncio.run(go())


def test_closing_a_document_frees_its_entries_in_every_cache_and_its_requests():
    async def go():
        svc = CompletionService(limits=CacheLimits(speculations=8))
        text = "def f(x):\n    return x\n"
        for uri in ("file:///a.py", "file:///b.py"):
            svc.docs.open(uri, text, 1, "python")
            svc.type_cache.put(uri, text, 10, 10, ["pass"])
            svc.result_cache.put(ResultCache.key(uri, 1), ["one"], uri)
            svc.result_cache.put(ResultCache.key(uri, 2), ["two"], uri)
            svc.speculations.start(f"spec:{uri}", uri, len(text))
            for key in (uri, f"fill:{uri}", f"speculate:{uri}"):
                svc.scheduler.ticket(key)
        ticket_a = svc.scheduler._latest["file:///a.py"]
        before = svc.caches.stats()
        svc.close("file:///a.py")
        after = svc.caches.stats()
        assert {k: v["entries"] for k, v in before.items()} == {"type_through": 2, "result": 4, "speculations": 2}
        assert {k: v["entries"] for k, v in after.items()} == {"type_through": 1, "result": 2, "speculations": 1}
        assert all(after[k]["bytes"] * 2 == before[k]["bytes"] for k in after)
        assert svc.type_cache.get("file:///a.py", text, 10) is None and svc.type_cache.get("file:///b.py", text, 10)
        assert len(svc.scheduler) == 3 and ticket_a.stale and len(svc.docs) == 1
        svc.close("file:///b.py")
        assert all(s["entries"] == 0 and s["bytes"] == 0 for s in svc.caches.stats().values())
        assert len(svc.scheduler) == 0 and len(svc.docs) == 0
        svc.shutdown()
    asyncio.run(go())


def test_a_cache_set_reports_what_is_over_its_bounds_and_takes_new_caches():
    class Store:   # the interface a per-document context K/V store implements to plug in
        max_entries, max_bytes = 2, 100

        def __init__(self):
            self.kv = {"file:///a.py": 80, "file:///b.py": 80}

        def __len__(self):
            return len(self.kv)

        def size_bytes(self):
            return sum(self.kv.values())

        def drop(self, uri):
            self.kv.pop(uri, None)

        def clear(self):
            self.kv.clear()

    caches = CacheSet(result=ResultCache(max_entries=2))
    caches.register("context_kv", Store())
    assert caches.over_bounds() == ["context_kv"]
    caches.drop("file:///a.py")
    assert caches.over_bounds() == [] and caches.stats()["context_kv"] == {
        "entries": 1, "bytes": 80, "max_entries": 2, "max_bytes": 100}


def test_scheduler_release_keeps_a_newer_ticket():
    sched = Scheduler()
    old = sched.ticket("u")
    new = sched.ticket("u")
    sched.release(old)
    assert len(sched) == 1 and old.stale and not new.stale
    sched.release(new)
    assert len(sched) == 0
    sched.shutdown()
