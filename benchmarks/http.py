"""`coda-lsp serve` under concurrent clients: batched denoising vs serving requests one after another.

Two real servers (`coda-lsp serve` subprocesses on 127.0.0.1) load the same model: one batches up to
8 concurrent requests (`--max-batch 8`, the default), the other denoises one request at a time
(`--max-batch 1`: requests queue and are served one after another). For 1, 2, 4 and 8 clients, both
are measured in the same run, interleaved round by round (each round: every client sends one request
to the serial server, then one to the batched one), on the same llama.vim-shaped `/infill` requests cut
from this repository's source files: requests/s and p50/p95 latency, and the batched/serial throughput
ratio. With one client nothing can be batched, so that row's ratio shows the measurement noise.

Usage: coda-bench http [--model DIR] [--requests 8] [--n-predict 24] [--threads N] [--dtype float32]
                       [--out benchmarks/results/http.json]
       (default model: the embedded default model)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 4, 8)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def holes(n: int, n_predict: int, seed: int = 0) -> list[dict]:
    """llama.vim-shaped bodies at random line ends of the repo's own Python files."""
    rng = random.Random(seed)
    files = sorted((REPO / "coda_lsp").glob("*.py")) + sorted((REPO / "model").glob("*.py"))
    out = []
    while len(out) < n:
        lines = rng.choice(files).read_text(encoding="utf-8").split("\n")
        if len(lines) < 20:
            continue
        i = rng.randrange(10, len(lines) - 5)
        cut = rng.randrange(0, len(lines[i]) + 1)
        out.append({"input_prefix": "\n".join(lines[max(0, i - 40):i]) + "\n", "prompt": lines[i][:cut],
                    "input_suffix": lines[i][cut:] + "\n" + "\n".join(lines[i + 1:i + 10]), "n_predict": n_predict,
                    "top_k": 40, "top_p": 0.9, "cache_prompt": True, "stream": False})
    return out


class Served:
    """A `coda-lsp serve` subprocess (on a free port unless `port` is given). `program` is the coda-lsp to
    run (default: this Python's); `popen` goes to subprocess.Popen (cwd, env)."""

    def __init__(self, model: str | None, max_batch: int | None, threads: int | None, dtype: str = "auto",
                 port: int | None = None, program: list[str] | None = None, **popen) -> None:
        if port is None:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
        self.port = port
        cmd = (program or [sys.executable, "-m", "coda_lsp.cli"]) + ["serve", "--port", str(self.port), "--dtype", dtype,
                                                                    "--log-level", "WARNING"]
        cmd += ["--model", model] if model else []
        cmd += ["--max-batch", str(max_batch)] if max_batch else []
        cmd += ["--threads", str(threads)] if threads else []
        self.proc = subprocess.Popen(cmd, **popen)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout_s: float = 600) -> None:
        import httpx
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("coda-lsp serve exited or never became healthy")
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def measure(url: str, bodies: list[dict], clients: int, per_client: int, offset: int = 0) -> dict:
    """Closed loop: `clients` tasks, each sending `per_client` requests one after another."""
    import httpx
    latencies: list[float] = []

    async def client(i: int, http: httpx.AsyncClient) -> None:
        for j in range(per_client):
            body = bodies[(offset + i * per_client + j) % len(bodies)]
            t0 = time.perf_counter()
            r = await http.post(f"{url}/infill", json=body)
            r.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1e3)

    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
    return {"latencies_ms": latencies, "wall_s": wall}


def interleaved(urls: dict[str, str], bodies: list[dict], clients: int, rounds: int) -> dict[str, dict]:
    """`rounds` rounds, each sending every client one request to each server in turn (the same bodies), so
    both see the same moments of a shared machine's load."""
    got = {mode: {"latencies_ms": [], "wall_s": 0.0} for mode in urls}
    for r in range(rounds):
        for mode, url in urls.items():
            m = asyncio.run(measure(url, bodies, clients, 1, offset=r * clients))
            got[mode]["latencies_ms"] += m["latencies_ms"]
            got[mode]["wall_s"] += m["wall_s"]
    return {mode: {"requests": len(g["latencies_ms"]), "requests_per_s": len(g["latencies_ms"]) / g["wall_s"],
                   "p50_ms": pct(g["latencies_ms"], 50), "p95_ms": pct(g["latencies_ms"], 95)}
            for mode, g in got.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="coda-bench http", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="CoDA model directory (default: the embedded default model)")
    p.add_argument("--requests", type=int, default=8, help="rounds (requests per client and server) at each level")
    p.add_argument("--n-predict", type=int, default=24)
    p.add_argument("--threads", type=int, default=None, help="model threads of each server")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="model dtype of each server (on many CPUs float32 is several times faster than bfloat16)")
    p.add_argument("--out", default=str(RESULTS / "http.json"))
    args = p.parse_args(argv)
    bodies = holes(64, args.n_predict)
    servers = {mode: Served(args.model, batch, args.threads, args.dtype) for mode, batch in (("batched", 8), ("serial", 1))}
    rows = []
    try:
        for s in servers.values():
            s.wait()
            asyncio.run(measure(s.url, bodies, 2, 1))   # warm-up
        urls = {mode: servers[mode].url for mode in ("serial", "batched")}
        for clients in LEVELS:
            for mode, r in interleaved(urls, bodies, clients, args.requests).items():
                rows.append({"clients": clients, "mode": mode, **r})
                print(f"{clients} clients {mode:>8}: {r['requests_per_s']:.2f} req/s  p50 {r['p50_ms']:.0f} ms  "
                      f"p95 {r['p95_ms']:.0f} ms", file=sys.stderr)
    finally:
        for s in servers.values():
            s.close()
    by = {(r["clients"], r["mode"]): r for r in rows}
    ratios = {str(c): by[(c, "batched")]["requests_per_s"] / by[(c, "serial")]["requests_per_s"] for c in LEVELS}
    result = {"benchmark": "http", "machine": platform.machine(), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
              "model": args.model or "embedded default model", "dtype": args.dtype, "n_predict": args.n_predict,
              "decode": "server default (DecodeConfig.editor(): <=16 steps, threshold 0.9, dual cache, blocks of 8)",
              "requests_per_client": args.requests, "rows": rows, "throughput_ratio_batched_over_serial": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("| clients | serial req/s | batched req/s | ratio | serial p50 / p95 ms | batched p50 / p95 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in LEVELS:
        s, b = by[(c, "serial")], by[(c, "batched")]
        print(f"| {c} | {s['requests_per_s']:.2f} | {b['requests_per_s']:.2f} | {ratios[str(c)]:.2f}x | "
              f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f} | {b['p50_ms']:.0f} / {b['p95_ms']:.0f} |")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
