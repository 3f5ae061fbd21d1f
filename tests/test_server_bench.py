"""`coda-bench server`'s after-Tab measurement drives the real service: with speculation on, the
suggestion after accepting one never waits for the model; with it off, it always does."""

from __future__ import annotations

import asyncio

from coda_bench.server import bench_after_tab, make_file


def test_after_tab_is_served_without_the_model_only_when_speculating(tiny_model_dir):
    result = asyncio.run(bench_after_tab(str(tiny_model_dir), make_file(200), n=3, think_ms=50))
    assert result["trials"] >= 1, "the tiny model gave no item at any line end"
    off, on = result["speculation_off"]["sources"], result["speculation_on"]["sources"]
    assert set(off) == {"model"}, off
    assert "model" not in on and sum(on.values()) == result["trials"], on
    assert result["speculation_on"]["p50_ms"] >= 0 and result["speculation_off"]["p50_ms"] > 0
