"""Cold and warm requests at the 1.7B shape through the real language server, one kernel per server.

A real LSP client (`coda_bench.lsp_client`, raw JSON-RPC over stdio) starts `coda-lsp --stdio` with
the kernel's settings, waits for the model, then per repeat opens a document with a block hole (a
new method body in stdlib `_pyio.py`), asks for the inline completion (cold: no stored context),
types one character and asks again (warm: the stored context is reused). Debounce 0, the confidence
gate off and speculation off, so each timed request is the model's work and nothing else queues in
front of it. The server's RSS (VmRSS, VmHWM) is read from /proc after the requests.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from coda_bench.editor_latency import position
from coda_bench.lsp_client import LspClient


def hole_document() -> tuple[str, int]:
    """_pyio.py with the body of `readline` removed: (text, cursor offset on the body's first line)."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / "_pyio.py").read_text(encoding="utf-8")
    cut = text.index("    def readline(self, size=-1):\n")
    head = text[:cut] + "    def readline(self, size=-1):\n        "
    tail = "\n\n" + text[text.index("    def __iter__(self):", cut):]
    return head + tail, len(head)


def proc_memory(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key.lower() + "_gb"] = round(int(value.split()[0]) / 1e6, 3)
    return out


async def cold_warm(model: Path, settings: dict, repeats: int, load_timeout_s: float = 1800) -> dict:
    argv = [sys.executable, "-m", "coda_lsp.cli", "--stdio", "--model", str(model)]
    err = tempfile.NamedTemporaryFile(prefix="coda-realsize-", suffix=".log", delete=False).name
    client = await LspClient.start(argv, err)
    init = {"processId": None, "rootUri": None, "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"modelPath": str(model), **settings}}
    t0 = time.perf_counter()
    await client.call("initialize", init)
    client.notify("initialized", {})
    while not any(s.get("state") in ("ready", "error") for s in client.statuses):
        if time.perf_counter() - t0 > load_timeout_s:
            await client.stop()
            raise SystemExit(f"the server did not load {model} in {load_timeout_s:.0f}s (log: {err})")
        await asyncio.sleep(0.2)
    load_s = time.perf_counter() - t0
    status = next(s for s in client.statuses if s.get("state") in ("ready", "error"))
    if status["state"] == "error":
        await client.stop()
        raise SystemExit(f"the server failed to load: {status.get('message')} (log: {err})")
    text, cursor = hole_document()
    cold, warm, texts = [], [], []
    try:
        for r in range(repeats):
            uri = f"file:///realsize/{r}/_pyio.py"
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                    "text": text}})
            params = {"textDocument": {"uri": uri}, "position": position(text, cursor), "context": {"triggerKind": 2}}
            t = time.perf_counter()
            got = await client.call("textDocument/inlineCompletion", params, timeout=3600)
            cold.append(time.perf_counter() - t)
            texts.append((got or {}).get("items", [{}])[0].get("insertText") if (got or {}).get("items") else None)
            pos = position(text, cursor)
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
                {"range": {"start": pos, "end": pos}, "text": "r"}]})
            typed = text[:cursor] + "r" + text[cursor:]
            t = time.perf_counter()
            await client.call("textDocument/inlineCompletion", {**params, "position": position(typed, cursor + 1)},
                              timeout=3600)
            warm.append(time.perf_counter() - t)
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            print(f"  server repeat {r}: cold {cold[-1]:.2f}s warm {warm[-1]:.2f}s", file=sys.stderr)
        memory = proc_memory(client.pid)
    finally:
        await client.stop()
    return {"status": status.get("message"), "server_load_s": round(load_s, 1), "cold_s": [round(x, 3) for x in cold],
            "warm_s": [round(x, 3) for x in warm], "cold_p50_s": round(statistics.median(cold), 3),
            "warm_p50_s": round(statistics.median(warm), 3), "first_text": texts[0], **memory}


def measure(model: Path, settings: dict, repeats: int) -> dict:
    return asyncio.run(cold_warm(model, settings, repeats))
