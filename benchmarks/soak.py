"""Soak: does one language server stay flat in memory and latency over a long run of editing traffic?

An independent LSP client (`coda_bench.lsp_client`, raw JSON-RPC over the server's stdio) drives
mixed operations over a stationary working set of real files (by default 40 modules of the running
interpreter's standard library), at most `--max-open` of them open at once:
  open    open the next file of the set, closing the oldest open one when the limit is reached
  type    type one character (continuing where this document was last typed, or at a random line end)
          and ask for an automatic inline completion
  cancel  the same, but `$/cancelRequest` right after sending it (the request must still be answered)
  accept  ask for an invoked completion at a line end, apply its first item as an editor does, and ask
          again at the new cursor (what speculation answers)
  fill    `coda.fillSelection` on one non-blank line (the server's `workspace/applyEdit` is applied)
The run is bounded in operations and seconds. At ~20 checkpoints (traffic paused until the server is
idle) it reads the server's RSS from /proc and, when the server answers `coda/stats`, its cache sizes.
Reported: RSS at start (after warm-up), middle and end, the growth of the second half, latency p50/p95
per quarter of the run, and the count of requests never answered.
Targets: second-half growth < 5%, nothing unanswered, last-quarter p95 within 20% of the first quarter.

Usage: coda-bench soak [--model DIR | --tiny] [--ops 2000] [--max-seconds 1800] [--tag before]
                       [--out benchmarks/results/soak_<model>[_<tag>].json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from coda_bench.lsp_client import LspClient, RpcError

RESULTS = Path(__file__).resolve().parent / "results"
MIX = {"type": 45, "cancel": 15, "accept": 10, "fill": 10, "open": 20}
TYPED = "abcdefghijklmnopqrstuvwxyz_.( "


@dataclass
class SoakConfig:
    ops: int = 2000
    max_seconds: float = 1800.0
    files: int = 40                 # size of the working set
    max_open: int = 8               # open documents at once (the oldest closes when a new one opens)
    checkpoints: int = 20
    seed: int = 0
    request_timeout_s: float = 120.0
    progress: bool = True           # one stderr line per checkpoint
    options: dict = field(default_factory=dict)   # initializationOptions


def stdlib_files(n: int, max_chars: int = 60_000) -> list[Path]:
    """`n` real Python modules of the running interpreter's stdlib (sorted, so every run uses the same)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.glob("*.py")):
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if 2_000 <= size <= max_chars:
            out.append(p)
    if len(out) < n:
        raise SystemExit(f"coda-bench soak: only {len(out)} stdlib modules found under {root}")
    return out[:: max(1, len(out) // n)][:n]


def _utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


class ClientDoc:
    """The client's copy of an open document (what an editor buffer is)."""

    def __init__(self, uri: str, text: str) -> None:
        self.uri, self.text, self.version = uri, text, 1
        self.cursor: Optional[int] = None       # where this document was last typed

    def lines(self) -> list[str]:
        return self.text.split("\n")

    def offset(self, line: int, character: int) -> int:
        lines = self.lines()
        line = min(line, len(lines) - 1)
        base = sum(len(l) + 1 for l in lines[:line])
        text, units = lines[line], 0
        for i, ch in enumerate(text):
            if units >= character:
                return base + i
            units += 2 if ord(ch) > 0xFFFF else 1
        return base + len(text)

    def position(self, offset: int) -> dict:
        before = self.text[:offset]
        line = before.count("\n")
        return {"line": line, "character": _utf16(before[before.rfind("\n") + 1:])}

    def edit(self, start: int, end: int, new: str) -> dict:
        """Apply a replacement; the didChange params for it."""
        rng = {"start": self.position(start), "end": self.position(end)}
        self.text = self.text[:start] + new + self.text[end:]
        self.version += 1
        return {"textDocument": {"uri": self.uri, "version": self.version},
                "contentChanges": [{"range": rng, "text": new}]}


def pct(xs: list[float], q: float) -> Optional[float]:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))], 1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Soak:
    def __init__(self, client: LspClient, files: list[Path], cfg: SoakConfig) -> None:
        self.client, self.files, self.cfg = client, files, cfg
        self.rng = random.Random(cfg.seed)
        self.open_docs: dict[str, ClientDoc] = {}      # insertion order = opening order
        self.next_file = 0
        self.latencies: list[tuple[int, str, float]] = []   # (op index, kind, ms)
        self.unanswered: list[str] = []
        self.errors: dict[str, int] = {}
        self.cancelled = 0
        self.op = 0
        client.on_apply_edit = self.apply_edit

    # --- helpers --------------------------------------------------------------------------------------
    def apply_edit(self, params: dict) -> bool:
        for uri, edits in (params.get("edit", {}).get("changes") or {}).items():
            doc = self.open_docs.get(uri)
            if doc is None:
                return False
            for e in sorted(edits, key=lambda e: (e["range"]["start"]["line"], e["range"]["start"]["character"]),
                            reverse=True):
                r = e["range"]
                a = doc.offset(r["start"]["line"], r["start"]["character"])
                b = doc.offset(r["end"]["line"], r["end"]["character"])
                self.client.notify("textDocument/didChange", doc.edit(a, b, e["newText"]))
        return True

    async def timed(self, kind: str, method: str, params: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = await self.client.call(method, params, self.cfg.request_timeout_s)
        except asyncio.TimeoutError:
            self.unanswered.append(f"{kind} #{self.op}")
            return None
        except RpcError as exc:
            self.errors[f"{kind}: {exc.code}"] = self.errors.get(f"{kind}: {exc.code}", 0) + 1
            return None
        self.latencies.append((self.op, kind, (time.perf_counter() - t0) * 1e3))
        return result

    def inline_params(self, doc: ClientDoc, offset: int, invoked: bool) -> dict:
        return {"textDocument": {"uri": doc.uri}, "position": doc.position(offset),
                "context": {"triggerKind": 1 if invoked else 2}}

    def pick_doc(self) -> ClientDoc:
        return self.open_docs[self.rng.choice(list(self.open_docs))]

    def line_end(self, doc: ClientDoc, non_blank: bool = False) -> tuple[int, int]:
        """(start, end) offsets of a random line (a non-blank one when asked and one exists)."""
        lines = doc.lines()
        for _ in range(20):
            i = self.rng.randrange(len(lines))
            if not non_blank or lines[i].strip():
                break
        start = sum(len(l) + 1 for l in lines[:i])
        return start, start + len(lines[i])

    # --- operations -----------------------------------------------------------------------------------
    def op_open(self) -> None:
        for _ in range(len(self.files)):
            path = self.files[self.next_file % len(self.files)]
            self.next_file += 1
            uri = path.as_uri()
            if uri not in self.open_docs:
                break
        else:
            return
        if len(self.open_docs) >= self.cfg.max_open:
            oldest = next(iter(self.open_docs))
            del self.open_docs[oldest]
            self.client.notify("textDocument/didClose", {"textDocument": {"uri": oldest}})
        text = path.read_text(encoding="utf-8", errors="replace")
        self.open_docs[uri] = ClientDoc(uri, text)
        self.client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                      "version": 1, "text": text}})

    def type_char(self) -> tuple[ClientDoc, int]:
        doc = self.pick_doc()
        if doc.cursor is None or doc.cursor > len(doc.text) or self.rng.random() < 0.5:
            doc.cursor = self.line_end(doc)[1]
        ch = self.rng.choice(TYPED)
        self.client.notify("textDocument/didChange", doc.edit(doc.cursor, doc.cursor, ch))
        doc.cursor += 1
        return doc, doc.cursor

    async def op_type(self) -> None:
        doc, cursor = self.type_char()
        await self.timed("type", "textDocument/inlineCompletion", self.inline_params(doc, cursor, False))

    async def op_cancel(self) -> None:
        doc, cursor = self.type_char()
        id_, fut = self.client.request("textDocument/inlineCompletion", self.inline_params(doc, cursor, False))
        self.client.cancel(id_)
        try:
            await asyncio.wait_for(fut, self.cfg.request_timeout_s)
        except asyncio.TimeoutError:
            self.unanswered.append(f"cancel #{self.op}")
        except RpcError:
            self.cancelled += 1

    async def op_accept(self) -> None:
        doc = self.pick_doc()
        end = self.line_end(doc, non_blank=True)[1]
        first = await self.timed("invoke", "textDocument/inlineCompletion", self.inline_params(doc, end, True))
        items = (first or {}).get("items") or []
        if not items:
            return
        item, r = items[0], items[0]["range"]
        a = doc.offset(r["start"]["line"], r["start"]["character"])
        b = doc.offset(r["end"]["line"], r["end"]["character"])
        self.client.notify("textDocument/didChange", doc.edit(a, b, item["insertText"]))
        doc.cursor = a + len(item["insertText"])
        await self.timed("after-accept", "textDocument/inlineCompletion", self.inline_params(doc, doc.cursor, False))

    async def op_fill(self) -> None:
        doc = self.pick_doc()
        start, end = self.line_end(doc, non_blank=True)
        line = doc.text[start:end]
        start += len(line) - len(line.lstrip())
        if start == end:
            return
        arg = {"uri": doc.uri, "range": {"start": doc.position(start), "end": doc.position(end)}}
        await self.timed("fill", "workspace/executeCommand", {"command": "coda.fillSelection", "arguments": [arg]})

    # --- checkpoints ----------------------------------------------------------------------------------
    async def checkpoint(self) -> dict:
        """Wait until the server is idle (status ready, a stats round trip), then read RSS and caches."""
        await asyncio.sleep(0.5)
        stats = None
        try:
            stats = await self.client.call("coda/stats", {"objects": True, "tracemalloc": True}, 30)
        except RpcError:
            pass                                  # a server without the stats request
        except asyncio.TimeoutError:
            self.unanswered.append(f"coda/stats #{self.op}")
        point = {"op": self.op, "t_s": round(time.perf_counter() - self.t0, 1),
                 "rss_mb": round(rss_mb(self.client.pid), 1), "open": len(self.open_docs), "stats": stats}
        if self.cfg.progress:
            print(f"soak: op {point['op']} at {point['t_s']} s, server RSS {point['rss_mb']} MB", file=sys.stderr)
        return point

    async def close_all(self) -> dict:
        """Close every document; what the server still holds afterwards (caches should be empty)."""
        for uri in list(self.open_docs):
            del self.open_docs[uri]
            self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        return await self.checkpoint()

    async def run(self) -> dict:
        for _ in range(self.cfg.max_open):
            self.op_open()
        for _ in range(4):        # warm-up: first parses, first model steps
            await self.op_type()
        self.latencies.clear()
        kinds, weights = zip(*MIX.items())
        every = max(1, self.cfg.ops // self.cfg.checkpoints)
        self.t0 = time.perf_counter()
        timeline = [await self.checkpoint()]
        ops_done: dict[str, int] = {k: 0 for k in kinds}
        for self.op in range(1, self.cfg.ops + 1):
            kind = self.rng.choices(kinds, weights)[0]
            if kind == "open":
                self.op_open()
            else:
                await getattr(self, f"op_{kind}")()
            ops_done[kind] += 1
            if self.op % every == 0 or self.op == self.cfg.ops:
                timeline.append(await self.checkpoint())
            if time.perf_counter() - self.t0 > self.cfg.max_seconds:
                if timeline[-1]["op"] != self.op:
                    timeline.append(await self.checkpoint())
                break
        report = self.report(timeline, ops_done)
        report["after_close_all"] = await self.close_all()
        return report

    def report(self, timeline: list[dict], ops_done: dict[str, int]) -> dict:
        n = timeline[-1]["op"]
        mid = min(timeline, key=lambda c: abs(c["op"] - n / 2))
        start, end = timeline[0], timeline[-1]
        quarters = []
        for q in range(4):
            lo, hi = q * n / 4, (q + 1) * n / 4
            ms = [m for op, _k, m in self.latencies if lo < op <= hi]
            quarters.append({"ops": f"{int(lo) + 1}-{int(hi)}", "requests": len(ms), "p50_ms": pct(ms, 50),
                             "p95_ms": pct(ms, 95)})
        growth = (end["rss_mb"] - mid["rss_mb"]) / mid["rss_mb"]
        p95_first, p95_last = quarters[0]["p95_ms"], quarters[-1]["p95_ms"]
        p95_ratio = (p95_last / p95_first) if p95_first and p95_last else None
        return {"ops": n, "ops_by_kind": ops_done, "seconds": end["t_s"],
                "rss_mb": {"start": start["rss_mb"], "middle": mid["rss_mb"], "end": end["rss_mb"]},
                "second_half_growth": round(growth, 4), "whole_run_growth": round((end["rss_mb"] - start["rss_mb"]) / start["rss_mb"], 4),
                "latency_by_quarter": quarters, "p95_last_over_first": round(p95_ratio, 3) if p95_ratio else None,
                "unanswered": len(self.unanswered), "unanswered_ops": self.unanswered[:20],
                "cancelled_with_error": self.cancelled, "errors": self.errors,
                "meets_targets": {"second_half_growth_lt_5pct": growth < 0.05, "none_unanswered": not self.unanswered,
                                  "p95_last_quarter_within_20pct": p95_ratio is not None and p95_ratio <= 1.2},
                "timeline": timeline}


async def soak(cfg: SoakConfig, server_argv: list[str], stderr_path: str, env: Optional[dict] = None,
               cwd: Optional[str] = None) -> dict:
    files = stdlib_files(cfg.files)
    client = await LspClient.start(server_argv, stderr_path, env, cwd=cwd)
    init = {"processId": os.getpid(), "rootUri": None, "initializationOptions": cfg.options,
            "capabilities": {"textDocument": {"inlineCompletion": {}}, "window": {"workDoneProgress": True}},
            "clientInfo": {"name": "coda-bench soak", "version": "1"}}
    await client.call("initialize", init, 60)
    client.notify("initialized", {})
    deadline = time.monotonic() + 600
    while not any(s.get("state") in ("ready", "error") for s in client.statuses):
        if time.monotonic() > deadline:
            raise SystemExit("coda-bench soak: the model did not load within 600 s")
        await asyncio.sleep(0.1)
    if client.statuses[-1].get("state") == "error":
        await client.stop()
        raise SystemExit(f"coda-bench soak: {client.statuses[-1].get('message')}")
    result = await Soak(client, files, cfg).run()
    result["exit_code"] = await client.stop()
    result["notifications"] = client.notifications
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="coda-bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="CoDA model directory (default: the embedded default model)")
    p.add_argument("--tiny", action="store_true", help="a tiny random-weight model written to a temp dir")
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--max-seconds", type=float, default=1800.0)
    p.add_argument("--files", type=int, default=40)
    p.add_argument("--max-open", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the result file name (e.g. before / after)")
    p.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                   help="run the server with CODA_LSP_TRACEMALLOC=FRAMES (coda/stats then diffs Python allocations)")
    p.add_argument("--fast", action="store_true",
                   help="a small decode (4 steps, 8 tokens, 256 context tokens) for slow or busy machines")
    p.add_argument("--pythonpath", help="run the server's coda_lsp from this checkout (e.g. a baseline, side by side)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        options: dict[str, Any] = {"streaming": True, "device": "cpu"}
        if args.fast:
            options.update(steps=4, maxTokens=8, contextTokens=256)
        label = "default_model"
        if args.tiny:
            from coda_model.testing import find_shared_coda_dir, write_random_coda_dir
            src = find_shared_coda_dir()
            if src is None:
                print("coda-bench soak: shared/coda-v0 not found; pass --model DIR", file=sys.stderr)
                return 2
            options["modelPath"] = str(write_random_coda_dir(Path(tmp) / "tiny", src, seed=0, num_shards=1))
            label = "tiny_random"
        elif args.model:
            options["modelPath"] = args.model
            label = Path(args.model).name
        cfg = SoakConfig(ops=args.ops, max_seconds=args.max_seconds, files=args.files, max_open=args.max_open,
                         seed=args.seed, options=options)
        env = {"CODA_LSP_TRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else {}
        if args.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.pythonpath, os.environ.get("PYTHONPATH")]))
        stderr_path = str(Path(tmp) / "server.log")
        argv = [sys.executable, "-m", "coda_lsp.cli", "--log-level", "WARNING"]
        result = asyncio.run(soak(cfg, argv, stderr_path, env, cwd=args.pythonpath))
        log_tail = Path(stderr_path).read_text(errors="replace")[-2000:]
    name = f"soak_{label}{'_' + args.tag if args.tag else ''}.json"
    out = Path(args.out or RESULTS / name)
    result = {"benchmark": "soak", "model": label, "machine": platform.machine(), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "server_code": args.pythonpath or "this checkout",
              "config": {k: v for k, v in asdict(cfg).items() if k != "options"}, "options": options | (
                  {"modelPath": "tiny random CoDA"} if args.tiny else {}), **result, "server_log_tail": log_tail}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: result[k] for k in ("ops", "seconds", "rss_mb", "second_half_growth", "latency_by_quarter",
                                      "p95_last_over_first", "unanswered", "meets_targets", "exit_code")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
