"""The server side of issue 15 on a real tiny CoDA checkpoint: per-document context K/V (bounded, freed on
close, reused after a keystroke) and speculation that yields to real requests within one step."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from coda_lsp.documents import Pos, TextChange
from coda_lsp.cache_limits import CacheLimits
from coda_lsp.options import ServerOptions
from coda_lsp.service import CompletionService

CODE = "import os\n\n\ndef area(width, height):\n    \n\n\ndef main():\n    print(area(2, 3))\n"
CURSOR = Pos(4, 4)


def options(model_dir, **kw) -> ServerOptions:
    base = ServerOptions(model_path=str(model_dir), device="cpu", dtype="float32", threads=1, debounce_ms=0,
                         speculate=False, min_confidence=0, min_shown_confidence=0)   # random weights: gate off
    return replace(base, **kw)


async def started(opts: ServerOptions) -> CompletionService:
    svc = CompletionService(opts)
    await svc.load()
    assert svc.ready, svc.message
    return svc


async def test_a_keystroke_reuses_the_documents_context_and_close_frees_it(tiny_model_dir):
    svc = await started(options(tiny_model_dir))
    try:
        svc.docs.open("file:///a.py", CODE, 1, "python")
        assert await svc.complete("file:///a.py", CURSOR) is not None
        store = svc.model.contexts
        assert store.get("file:///a.py").reuses == 0
        svc.docs.change("file:///a.py", [TextChange("r", CURSOR, CURSOR)], 2)
        assert await svc.complete("file:///a.py", Pos(4, 5)) is not None
        assert store.get("file:///a.py").reuses == 1, "the second request recomputed the whole context"
        svc.close("file:///a.py")
        assert len(store) == 0 and store.size_bytes() == 0
    finally:
        svc.shutdown()


async def test_memory_stays_bounded_with_many_open_documents(tiny_model_dir):
    svc = await started(options(tiny_model_dir, context_cache_mb=1))
    try:
        for n in range(CacheLimits.context_kv_entries + 4):
            uri = f"file:///doc{n}.py"
            svc.docs.open(uri, CODE.replace("area", f"area{n}"), 1, "python")
            await svc.complete(uri, CURSOR)
        store = svc.model.contexts
        one = store.get(f"file:///doc{CacheLimits.context_kv_entries + 3}.py").nbytes
        assert len(store) <= CacheLimits.context_kv_entries
        assert store.size_bytes() <= max(2**20, one)
        assert "file:///doc0.py" not in store          # least recently used went first
    finally:
        svc.shutdown()


async def test_context_cache_off_keeps_serving(tiny_model_dir):
    svc = await started(options(tiny_model_dir, context_cache_mb=0))
    try:
        svc.docs.open("file:///a.py", CODE, 1, "python")
        assert svc.model.contexts is None
        assert await svc.complete("file:///a.py", CURSOR) is not None
        svc.reconfigure({"contextCacheMb": 64})
        assert svc.model.contexts is not None and svc.model.contexts.max_bytes == 64 * 2**20
    finally:
        svc.shutdown()


async def _steps_for_a_request(svc: CompletionService, speculating: bool) -> tuple[int, int]:
    """(worker steps between the request's arrival and its answer, the request's own steps)."""
    svc.docs.open("file:///spec.py", CODE, 1, "python")
    svc.docs.open("file:///other.py", CODE.replace("area", "volume"), 1, "python")
    first = await svc.complete("file:///spec.py", CURSOR)
    assert first is not None
    if speculating:
        start = svc.scheduler.steps_run
        for _ in range(2000):   # until the speculation is mid-way through its steps
            if svc.speculations and svc.scheduler.steps_run >= start + 2:
                break
            await asyncio.sleep(0.005)
        assert svc.speculations, "no speculation running after the completion"
    before = svc.scheduler.steps_run
    finals = []
    result = await svc.complete("file:///other.py", CURSOR, on_partial=lambda e: e.done and finals.append(e.step))
    assert result is not None and result.source == "model"
    return svc.scheduler.steps_run - before, finals[-1]


@pytest.mark.parametrize("speculate", [False, True])
async def test_speculation_gives_way_within_one_step(tiny_model_dir, speculate):
    """Speculation decodes many steps (a long block hole, fixed schedule, no early end); a real request on
    another document arriving meanwhile waits for at most the one speculative step already running."""
    decode = replace(ServerOptions().decode, threshold=None, steps=32, cache="dual")
    svc = await started(options(tiny_model_dir, speculate=speculate, decode=decode, max_tokens=32))
    try:
        waited, own = await _steps_for_a_request(svc, speculate)
        assert own > 2
        assert waited <= own + (1 if speculate else 0), f"{waited} worker steps for a {own}-step request"
    finally:
        svc.shutdown()
