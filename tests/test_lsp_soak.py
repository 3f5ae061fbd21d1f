"""A short soak through the real server over stdio: no cache ever outgrows its bound, and closing every
document leaves every cache empty (sizes read from the server's own `coda/stats`, not from RSS).

The long run (2,000 operations, RSS and latency over time) is `coda-bench soak`, not a test.
"""

from __future__ import annotations

import asyncio
import sys

from coda_bench.soak import SoakConfig, soak

SERVER = [sys.executable, "-m", "coda_lsp.cli", "--log-level", "WARNING"]


def within_bounds(stats: dict) -> list[str]:
    return [f"{name}: {c}" for name, c in stats["caches"].items()
            if c["entries"] > c["max_entries"] or (c["max_bytes"] is not None and c["bytes"] > c["max_bytes"])]


def test_short_soak_keeps_every_cache_within_its_bound_and_closing_everything_empties_them(tiny_model_dir, tmp_path):
    options = {"modelPath": str(tiny_model_dir), "device": "cpu", "dtype": "float32", "steps": 2, "maxTokens": 8,
               "contextTokens": 256, "debounceMs": 0, "streaming": True}
    cfg = SoakConfig(ops=150, max_seconds=600, files=12, max_open=4, checkpoints=10, request_timeout_s=60,
                     options=options, progress=False)
    result = asyncio.run(soak(cfg, SERVER, str(tmp_path / "server.log")))
    assert result["unanswered"] == 0 and result["exit_code"] == 0, result["unanswered_ops"]
    assert all(n > 0 for n in result["ops_by_kind"].values()), result["ops_by_kind"]
    assert sum(q["requests"] for q in result["latency_by_quarter"]) > 50
    points = result["timeline"] + [result["after_close_all"]]
    for point in points:
        stats = point["stats"]
        assert not within_bounds(stats), (point["op"], within_bounds(stats))
        assert stats["documents"]["open"] == point["open"] <= cfg.max_open
        assert stats["in_flight"]["tickets"] <= 3 * point["open"], stats["in_flight"]
        assert stats["pygls"]["request_futures"] == 0, stats["pygls"]
    assert any(p["stats"]["caches"]["result"]["entries"] > 0 for p in points)   # the caches were used
    end = result["after_close_all"]["stats"]
    assert {name: (c["entries"], c["bytes"]) for name, c in end["caches"].items()} == {
        name: (0, 0) for name in end["caches"]}
    assert end["documents"] == {"open": 0, "trees": 0, "text_bytes": 0} and end["in_flight"]["tickets"] == 0
