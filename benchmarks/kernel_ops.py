"""`coda-bench kernels`: one window-step matrix multiply (2048 -> 6144, the 1.7B MLP) in every CPU kernel we
considered, side by side in one run: why `coda_model.int8` uses oneDNN's u8s8 linear.

Rows: fp32 and bf16 `F.linear`; `torch.ao.quantization.quantize_dynamic` (deprecated; per-tensor activation
scale) under the fbgemm and onednn engines; torchao's `Int8DynamicActivationInt8WeightConfig` eager and
under `torch.compile` (when torchao is installed; compile time reported); `coda_model.int8.Int8Linear`
(per-token activations). M = rows: 1 (AR decode), 9 (a window step), 32, 512 (a context refresh).
Each cell is the median of `--repeats` calls after warm-up, in ms; the relative error is against fp32.

    coda-bench kernels [--threads 1] [--repeats 20]
Writes benchmarks/results/kernel_ops.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (1, 9, 32, 512)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)


def candidates(w: torch.Tensor) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Optional[float]]]:
    """name -> (fn(x fp32) -> y, seconds spent compiling or None)."""
    from coda_model.int8 import Int8Linear, int8_kernel_available
    n, k = w.shape
    lin = torch.nn.Linear(k, n, bias=False)
    lin.weight.data = w.clone()
    wb = w.bfloat16()
    out: dict = {"fp32 F.linear": (lambda x: F.linear(x, w), None),
                 "bf16 F.linear": (lambda x: F.linear(x.bfloat16(), wb), None)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in ("fbgemm", "onednn"):
            if engine in torch.backends.quantized.supported_engines:
                torch.backends.quantized.engine = engine
                q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(copy.deepcopy(lin)), {torch.nn.Linear},
                                                           dtype=torch.qint8)
                out[f"quantize_dynamic ({engine})"] = (lambda x, q=q, e=engine: _with_engine(e, q, x), None)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
        m = torch.nn.Sequential(copy.deepcopy(lin))
        quantize_(m, Int8DynamicActivationInt8WeightConfig())
        out["torchao int8 dynamic (eager)"] = (m, None)
        compiled = torch.compile(copy.deepcopy(m), dynamic=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(torch.randn(9, k))
        out["torchao int8 dynamic (torch.compile)"] = (compiled, time.perf_counter() - t0)
    except ImportError:
        out["torchao"] = (None, None)   # not installed: `pip install torchao` to add these rows
    if int8_kernel_available():
        out["coda_model.int8 (oneDNN u8s8, per-token)"] = (Int8Linear.from_linear(lin), None)
    return out


def _with_engine(engine: str, module, x):
    torch.backends.quantized.engine = engine
    return module(x)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="coda-bench kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "kernel_ops.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from coda_bench.realsize import machine
    torch.manual_seed(0)
    w = torch.randn(6144, 2048) * 0.02
    table: dict = {}
    with torch.no_grad():
        for name, (fn, compile_s) in candidates(w).items():
            if fn is None:
                table[name] = {"error": "not installed"}
                continue
            row: dict = {"compile_s": round(compile_s, 1)} if compile_s else {}
            for m in ROWS:
                x = torch.randn(m, 2048)
                try:
                    y = fn(x).float()
                    ref = F.linear(x, w)
                    row[f"M={m} ms"] = median_ms(lambda: fn(x), args.repeats)
                    row[f"M={m} rel_err"] = round(float((y - ref).norm() / ref.norm()), 4)
                except Exception as exc:   # a kernel this build or CPU lacks
                    row[f"M={m} ms"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            table[name] = row
            print(f"{name:<42} " + "  ".join(f"M={m}: {row.get(f'M={m} ms')}" for m in ROWS), file=sys.stderr)
    result = {"machine": {**machine(), "load_average_end": os.getloadavg()}, "threads": args.threads,
              "shape": "x[M, 2048] @ W[6144, 2048].T", "table": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
