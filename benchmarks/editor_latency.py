"""What an editor waits for, against the engine's own decode of the same hole, interleaved in one run.

For each of N real stdlib modules (files the default model never trained on), a block hole is made
the way a user makes one: a new `def` line typed after the module's middle, cursor on the indented
line below it. Then, per file, in this order:
- engine: `coda_lsp.pipeline.run_once` in this process (the four stages, no server), same settings;
- fresh: a real LSP client (raw JSON-RPC over stdio, `coda_bench.lsp_client`) opens the file and asks
  for the inline completion at the hole;
- warm: the client types one character at the hole and asks again at the new cursor.
The server runs its defaults (speculation on), except `debounceMs` 0 (debounce is policy, not work)
and the confidence gate off (so every request reaches the model and the speculation that follows).
Target (issue 15): fresh and warm within 10% + 10 ms of the engine's decode.

Usage: coda-bench latency [--model DIR] [--files 12] [--out benchmarks/results/editor_latency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coda_bench.lsp_client import LspClient
from coda_bench.soak import stdlib_files

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"debounceMs": 0, "minConfidence": 0, "minShownConfidence": 0, "streaming": False}


def make_hole(text: str) -> tuple[str, int]:
    """The text with a new function typed after the middle line, and the offset of its body's cursor."""
    lines = text.splitlines(keepends=True)
    mid = len(lines) // 2
    while mid < len(lines) and lines[mid].strip():   # a blank line at top level: between statements
        mid += 1
    head = "".join(lines[:mid])
    new = "\ndef helper(value):\n    "
    return head + new + "\n" + "".join(lines[mid:]), len(head) + len(new)


def position(text: str, offset: int) -> dict:
    before = text[:offset]
    line = before.count("\n")
    col = len(before) - (before.rfind("\n") + 1)
    return {"line": line, "character": len(before[len(before) - col:].encode("utf-16-le")) // 2}


async def measure(model: str | None, files: list[Path], max_tokens: int | None = None) -> dict:
    from coda_lsp.documents import Document
    from coda_lsp.loading import load_engine
    from coda_lsp.options import ServerOptions, merge_options
    from coda_lsp.pipeline import run_once

    settings = {**SETTINGS, **({"maxTokens": max_tokens} if max_tokens else {})}
    options, _ = merge_options(ServerOptions(model_path=model), settings)
    lm = load_engine(options)
    argv = [sys.executable, "-m", "coda_lsp.cli", "--stdio"] + (["--model", model] if model else [])
    err = tempfile.NamedTemporaryFile(prefix="coda-latency-", suffix=".log", delete=False).name
    client = await LspClient.start(argv, err)
    init = {"processId": None, "rootUri": None, "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {**settings, **({"modelPath": model} if model else {})}}
    await client.call("initialize", init)
    client.notify("initialized", {})
    for _ in range(600):   # wait until the model is loaded (coda/status ready)
        if any(s.get("state") == "ready" for s in client.statuses):
            break
        await asyncio.sleep(0.1)
    rows = []
    try:
        for i, path in enumerate(files):
            text, cursor = make_hole(path.read_text(encoding="utf-8"))
            uri = f"file:///latency/{i}_{path.name}"
            t0 = time.perf_counter()
            _, items = run_once(lm, Document(uri, text, 1, "python"), cursor, None, options)
            engine_ms = 1e3 * (time.perf_counter() - t0)
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                    "version": 1, "text": text}})
            params = {"textDocument": {"uri": uri}, "position": position(text, cursor),
                      "context": {"triggerKind": 2}}
            t0 = time.perf_counter()
            fresh = await client.call("textDocument/inlineCompletion", params)
            fresh_ms = 1e3 * (time.perf_counter() - t0)
            pos = position(text, cursor)
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
                {"range": {"start": pos, "end": pos}, "text": "r"}]})
            typed = text[:cursor] + "r" + text[cursor:]
            t0 = time.perf_counter()
            await client.call("textDocument/inlineCompletion", {**params, "position": position(typed, cursor + 1)})
            warm_ms = 1e3 * (time.perf_counter() - t0)
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            same = bool(fresh and fresh.get("items")) and items[:1] == [fresh["items"][0]["insertText"]]
            rows.append({"file": path.name, "engine_ms": engine_ms, "fresh_ms": fresh_ms, "warm_ms": warm_ms,
                         "same_text": same})
            print(f"{path.name:<24} engine {engine_ms:7.1f} ms  fresh {fresh_ms:7.1f} ms  warm {warm_ms:7.1f} ms"
                  f"  same text: {same}", file=sys.stderr)
    finally:
        await client.stop()
    med = {k: statistics.median(r[k] for r in rows) for k in ("engine_ms", "fresh_ms", "warm_ms")}
    return {"rows": rows, "p50": med, "fresh_over_engine": med["fresh_ms"] / med["engine_ms"],
            "warm_over_engine": med["warm_ms"] / med["engine_ms"],
            "fresh_within_target": med["fresh_ms"] <= 1.1 * med["engine_ms"] + 10,
            "same_text": sum(r["same_text"] for r in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="coda-bench latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=None, help="block-hole budget (default: the server's, 48)")
    ap.add_argument("--out", type=Path, default=RESULTS / "editor_latency.json")
    args = ap.parse_args(argv)
    res = asyncio.run(measure(args.model, stdlib_files(args.files), args.max_tokens))
    res.update(machine=platform.processor() or platform.machine(), python=platform.python_version(),
               settings={**SETTINGS, "maxTokens": args.max_tokens or "server default"},
               model=args.model or "embedded default model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
    p = res["p50"]
    print(f"p50 engine {p['engine_ms']:.0f} ms, fresh {p['fresh_ms']:.0f} ms ({res['fresh_over_engine']:.2f}x), "
          f"warm {p['warm_ms']:.0f} ms ({res['warm_over_engine']:.2f}x); same text {res['same_text']}/{len(res['rows'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
