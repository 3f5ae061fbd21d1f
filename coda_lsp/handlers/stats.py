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
        svc = ls.service
        docs = list(svc.docs._docs.values())
        return {"caches": {"type_through": len(svc.type_cache._entries), "result": len(svc.result_cache._data),
                           "speculations": len(svc.speculations), "background": len(svc.background),
                           "tickets": len(svc.scheduler._latest)},
                "documents": {"open": len(docs), "trees": sum(d._tree is not None for d in docs),
                              "chars": sum(len(d.text) for d in docs)},
                "pygls": {"request_futures": len(protocol._request_futures),
                          "result_types": len(protocol._result_types)},
                "process": process_stats(_flag(params, "objects"), _flag(params, "tracemalloc"))}
