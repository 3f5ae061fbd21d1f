"""Pick the default model's size by measurement on this CPU (random weights, real `CodaLM`).

For each candidate shape it measures, in a fresh subprocess (so RSS is the candidate's own):
- `infill_exact_ms`: a 32-token hole in ~512 context tokens decoded with threshold decoding in
  `--forwards` denoising steps, every step a full forward over context + hole (the engine's exact mode);
- `infill_dual_ms`: the same with a dual KV cache: one full forward, then `--forwards - 1` forwards of
  only the 32 hole tokens against the cached context keys/values (what the engine's cache does);
- `train_tok_s`: forward+backward tokens/s at sequence 512 in fp32 (the training budget question:
  what fits in ~60 min of a shared 2-core CPU);
- `rss_mb` after loading and running, `bf16_mb` on disk.
Latency is the median of `--repeats` runs; bf16 and fp32 are both tried (CPU bf16 needs AVX512-BF16/AMX).

Usage:
    .venv/bin/python train/recipes/default_model/size_model.py --vocab 8192 --out runs/default_model/sizing.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from coda_model.config import CodaConfig
from coda_model.network import CodaLM, init_weights

# (hidden, layers, heads, kv_heads, head_dim, ffn)
CANDIDATES = {
    "h256_l4": (256, 4, 4, 2, 64, 768),
    "h256_l6": (256, 6, 4, 2, 64, 768),
    "h320_l6": (320, 6, 5, 5, 64, 960),
    "h384_l6": (384, 6, 6, 2, 64, 1152),
    "h384_l8": (384, 8, 6, 2, 64, 1152),
    "h512_l8": (512, 8, 8, 4, 64, 1536),
}


def make_config(name: str, vocab: int) -> CodaConfig:
    d, n, h, kv, hd, f = CANDIDATES[name]
    return CodaConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=n, num_attention_heads=h,
                      num_key_value_heads=kv, head_dim=hd, intermediate_size=f, max_position_embeddings=4096,
                      mask_token_id=7, pad_token_id=0, bos_token_id=0, eos_token_id=2, torch_dtype="bfloat16")


@torch.inference_mode()
def infill_ms(model: CodaLM, ctx: int, hole: int, forwards: int, cached: bool, repeats: int) -> float:
    vocab = model.lm_head.out_features
    ids = torch.randint(8, vocab, (1, ctx + hole))
    hole_pos = torch.arange(ctx // 2, ctx // 2 + hole)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        if not cached:
            for _ in range(forwards):
                model(ids, logits_index=hole_pos - 1)
        else:
            ctx_ids = torch.cat([ids[:, : ctx // 2], ids[:, ctx // 2 + hole:]], dim=1)
            pos_ctx = torch.cat([torch.arange(ctx // 2), torch.arange(ctx // 2 + hole, ctx + hole)])[None]
            out = model(ids, use_cache=True, logits_index=hole_pos - 1)  # first step refreshes the cache
            kv = out.key_values
            # keep only context keys/values (drop the hole's own), as a dual cache does
            keep = pos_ctx[0]
            past = [(k[:, :, keep], v[:, :, keep]) for k, v in kv]
            for _ in range(forwards - 1):
                model(ids[:, hole_pos], position_ids=hole_pos[None], past_key_values=past,
                      logits_index=torch.arange(hole))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[1:])


def train_tok_s(model: CodaLM, seq: int, batch: int, iters: int) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.lm_head.out_features
    ids = torch.randint(8, vocab, (batch, seq))
    for i in range(iters + 1):
        if i == 1:
            t0 = time.perf_counter()
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return batch * seq * iters / (time.perf_counter() - t0)


def measure_one(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    cfg = make_config(name, args.vocab)
    row = {"name": name, "params": cfg.num_parameters, "bf16_mb": round(cfg.num_parameters * 2 / 2**20, 1),
           "non_embedding_params": cfg.num_parameters - 2 * cfg.vocab_size * cfg.hidden_size}
    model = CodaLM(cfg)
    init_weights(model, std=0.02, seed=0)
    model.eval()
    for dtype in (torch.bfloat16, torch.float32):
        m = model.to(dtype)
        tag = "bf16" if dtype == torch.bfloat16 else "fp32"
        row[f"infill_exact_ms_{tag}"] = round(infill_ms(m, args.ctx, args.hole, args.forwards, False, args.repeats), 1)
        row[f"infill_dual_ms_{tag}"] = round(infill_ms(m, args.ctx, args.hole, args.forwards, True, args.repeats), 1)
    row["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.train_iters:
        row["train_tok_s_fp32"] = round(train_tok_s(model.float(), 512, 4, args.train_iters))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=512, help="context tokens around the hole")
    ap.add_argument("--hole", type=int, default=32)
    ap.add_argument("--forwards", type=int, default=10, help="denoising forwards per hole (threshold decoding)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: measure one candidate, print JSON
    ap.add_argument("--out", default="runs/default_model/sizing.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return 0
    names = args.only.split(",") if args.only else list(CANDIDATES)
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--vocab", str(args.vocab), "--ctx", str(args.ctx),
               "--hole", str(args.hole), "--forwards", str(args.forwards), "--repeats", str(args.repeats),
               "--train-iters", str(args.train_iters)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k not in ("one", "out")},
                                          "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
