"""`coda/stats`: what the server holds (caches against their bounds, documents, in-flight work, memory).

A debugging request, not part of the editor protocol: the soak benchmark and the tests read it to
check that nothing outgrows its bound. Params (all optional): {"objects": bool, "tracemalloc": bool}.
"""

from __future__ import annotations

from typing import Any

from coda_lsp.diagnostics import process_stats, start_tracemalloc_from_env

STATS = "coda/stats"


def _flag(params: Any, name: str) -> bool:
    value = params.get(name) if isinstance(params, dict) else getattr(params, name, None)
    return bool(value)


def register(server) -> None:
    start_tracemalloc_from_env()
    @server.feature(STATS)
    def stats(ls, params: Any = None) -> dict:
        protocol = ls.protocol
        return {**ls.service.memory_report(),
                "pygls": {"request_futures": len(protocol._request_futures),
                          "result_types": len(protocol._result_types)},
                "process": process_stats(_flag(params, "objects"), _flag(params, "tracemalloc"))}
