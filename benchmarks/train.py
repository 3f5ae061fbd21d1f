"""`coda-bench train`: training throughput (tokens/s) and MFU of the real training step.

Runs `coda_train.trainer.Trainer` (same step function as `coda-train pretrain`) for a few steps on
synthetic token shards and writes JSON. Presets:
- `small` (default): configs/tiny_pretrain.toml's model (hidden 64, 2 layers, seq 128, batch 8);
- `medium`: hidden 256, 4 layers, seq 256, batch 16 (the size of the embedded default model's runs);
- `1p7b`: CoDA-1.7B's shape (Qwen3-1.7B, untied head, 151,936 rows), bf16 parameters, Adafactor,
  activation checkpointing (the TPU recipe's set-up) — for a GPU.

MFU = tokens/s x training FLOPs per token / peak FLOP/s. On GPUs the peak is the vendor's dense bf16
figure; on CPUs there is none, so the peak is *measured* here (a large matmul in the run's dtype) and
the JSON says so.

    python -m coda_bench.train                              # CPU, small
    python -m coda_bench.train --device cuda --preset 1p7b --seq-len 8192 --micro-batch 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from coda_model.tokenizer import CodaTokenizer
from coda_train.config import apply_overrides, config_from_dict
from coda_train.data import write_token_array
from coda_train.metrics import flops_per_token, guess_peak_flops, measure_matmul_flops
from coda_train.testing import make_tokenizer
from coda_train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def preset_sections(preset: str, tok_dir: Path, data_dir: Path, out_dir: Path, args) -> dict:
    if preset in ("small", "medium"):
        small = preset == "small"
        model = {"init": "random", "tokenizer": str(tok_dir), "hidden_size": 64 if small else 256,
                 "intermediate_size": 128 if small else 768, "num_hidden_layers": 2 if small else 4,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16 if small else 64,
                 "max_position_embeddings": 512, "dtype": args.dtype or "float32"}
        seq = args.seq_len or (128 if small else 256)
        batch, micro = args.batch or (8 if small else 16), args.micro_batch or 0
        optim = {"name": "adafactor", "lr": 3e-3, "schedule": "linear"}
    else:
        model = {"init": "random", "tokenizer": str(tok_dir), "preset": "coda_1p7b", "vocab_size": 151936,
                 "max_position_embeddings": 40960, "dtype": args.dtype or "bfloat16",
                 "gradient_checkpointing": not args.no_checkpointing}
        seq, batch, micro = args.seq_len or 8192, args.batch or 1, args.micro_batch or 0
        optim = {"name": "adafactor", "lr": 3e-4, "schedule": "linear", "grad_clip": 0.0}
    return {
        "model": model,
        "data": {"train": [str(data_dir)], "seq_len": seq, "packing": "concat"},
        "objective": {"kind": "diffusion", "logits": args.logits},
        "optim": optim,
        "run": {"out_dir": str(out_dir), "steps": args.steps, "batch_size": batch, "micro_batch_size": micro,
                "device": args.device, "progress": False, "tensorboard": False, "log_every": 1,
                "threads": args.threads,
                "precision": "bf16" if (args.dtype or "") == "float32" and args.device == "cuda" else "fp32"},
    }


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok_dir = make_tokenizer(tmp / "tok", vocab_size=1024)
        tok = CodaTokenizer.from_dir(tok_dir)
        sections = preset_sections(args.preset, tok_dir, tmp / "data", tmp / "run", args)
        seq, batch = sections["data"]["seq_len"], sections["run"]["batch_size"]
        need = seq * batch * (args.steps + 1)
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 1000, need).astype(np.int64)
        ends = np.arange(1024, need + 1, 1024)
        tokens[ends - 1] = tok.eos_id
        write_token_array(tmp / "data", tokens, ends, tok)
        cfg = config_from_dict(apply_overrides(sections, args.set or []))
        trainer = Trainer(cfg, "pretrain", log=lambda *_: None)
        try:
            summary = trainer.run()
            device = trainer.backend.device
            mc = trainer.model_config
            step_times = [r for r in _records(tmp / "run")]
        finally:
            trainer.close()
        dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" or cfg.run.precision == "bf16" else torch.float32
        peak = guess_peak_flops(device, cfg)
        peak_source = "vendor dense bf16 peak" if peak else "measured matmul (2048^3, run dtype) on this machine"
        threads = args.threads or torch.get_num_threads()
        if not peak:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)  # the peak with the threads the run used
            peak = measure_matmul_flops(device, dtype, n=2048)
            torch.set_num_threads(before)
        fpt = flops_per_token(mc, seq)
        result = {
            "benchmark": "train", "preset": args.preset, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": threads,
            "load_average_1min": _load(),
            "parameters": mc.num_parameters, "seq_len": seq, "global_batch_rows": batch,
            "micro_batch_rows": trainer.micro, "accumulation": trainer.accum, "param_dtype": cfg.model.dtype,
            "precision": cfg.run.precision, "optimizer": cfg.optim.name, "logits": cfg.objective.logits,
            "gradient_checkpointing": cfg.model.gradient_checkpointing, "steps": args.steps,
            "tokens_per_step": seq * batch, "tokens_per_s": summary.tokens_per_s,
            "flops_per_token": fpt, "peak_flops": peak, "peak_source": peak_source,
            "mfu": summary.tokens_per_s * fpt / peak, "final_loss": summary.final_loss,
            "step_time_s": [round(r["elapsed_step_s"], 4) for r in step_times],
            "tokens_per_s_median_step": seq * batch / float(np.median([r["elapsed_step_s"] for r in step_times[1:]] or [np.nan])),
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        }
    return result


def _load():
    try:
        import os  # noqa: PLC0415

        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _records(run_dir: Path):
    prev = 0.0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r["elapsed_step_s"] = r["elapsed_s"] - prev
        prev = r["elapsed_s"]
        yield r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="coda-bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("small", "medium", "1p7b"), default="small")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch", type=int, help="global batch in rows")
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--dtype", choices=("float32", "bfloat16"))
    p.add_argument("--logits", choices=("masked", "full"), default="masked")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--set", action="append", help="extra config override SECTION.KEY=VALUE")
    p.add_argument("--out", help="JSON path (default benchmarks/results/train_<preset>_<device>.json)")
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out) if args.out else RESULTS / f"train_{args.preset}_{result['device'].split(':')[0]}_{result['param_dtype']}_t{result['threads']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    mfu = result["mfu"]
    print(f"{result['preset']} on {result['device_name']}: {result['tokens_per_s']:,.0f} tokens/s, MFU {mfu * 100:.1f}% "
          f"({result['peak_source']}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
