"""Peak RSS of loading a CoDA directory of the real 1.7B shape (random bf16 weights).

Shows that `load_model` builds on the meta device and reads the mmap'd safetensors tensor by tensor, so
peak memory stays near the size of the weights instead of twice it.

Usage: coda-bench load [--dir /tmp/coda-1p7b-random] [--out benchmarks/results/load_rss.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from coda_model.config import CodaConfig
from coda_model.network import CodaLM
from coda_model.testing import TOKENIZER_FILES, find_shared_coda_dir


def write_random_full_size(out: Path, max_shard_bytes: int = 2 * 1024**3) -> int:
    """Write random bf16 shards for the 1.7B shape without ever holding the whole model in RAM."""
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    cfg = CodaConfig.coda_1p7b()
    cfg.torch_dtype = "bfloat16"
    cfg.save_json(out / "config.json")
    src = find_shared_coda_dir()
    for name in TOKENIZER_FILES:
        if src and (src / name).exists():
            shutil.copy(src / name, out / name)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in CodaLM(cfg).state_dict().items()}
    weight_map, shard, size, n, total = {}, {}, 0, 0, 0
    names = list(shapes)

    def flush():
        nonlocal shard, size, n
        n += 1
        fname = f"model-{n:05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
        shard, size = {}, 0

    gen = torch.Generator().manual_seed(0)
    for name in names:
        t = torch.randn(shapes[name], generator=gen, dtype=torch.float32).mul_(0.02).to(torch.bfloat16)
        nbytes = t.numel() * 2
        if shard and size + nbytes > max_shard_bytes:
            flush()
        shard[name] = t
        size += nbytes
        total += nbytes
    flush()
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def _vm_hwm_mb() -> float:
    """Peak resident set of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: str) -> dict:
    from coda_model.checkpoint import load_model
    before = _vm_hwm_mb()
    t0 = time.perf_counter()
    loaded = load_model(path, device="cpu", dtype="bfloat16")
    seconds = time.perf_counter() - t0
    after_load = _vm_hwm_mb()
    with torch.no_grad():  # touch every weight: mmap-backed tensors become resident
        n = 0
        for p in loaded.model.parameters():
            p.sum()
            n += p.numel()
    return {"parameters": n, "load_seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
            "peak_rss_after_load_mb": round(after_load, 1), "peak_rss_mb": round(_vm_hwm_mb(), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="coda-bench load", description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/coda-1p7b-random")
    ap.add_argument("--out", default="benchmarks/results/load_rss.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.dir)))
        return 0
    d = Path(args.dir)
    if not (d / "model.safetensors.index.json").exists():
        write_random_full_size(d)
    weight_bytes = json.loads((d / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    res = subprocess.run([sys.executable, "-m", "coda_bench.load_rss", "--dir", str(d), "--child"],
                         capture_output=True, text=True, check=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result.update({"weights_mb": weight_bytes / 2**20, "machine": "2-core AMD EPYC (AVX-512), 24 GiB, no GPU"})
    result["peak_over_weights"] = round((result["peak_rss_mb"] - result["rss_before_mb"]) / result["weights_mb"], 3)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
