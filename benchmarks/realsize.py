"""`coda-bench realsize`: the language server's decode at the real CoDA-1.7B shape, against AR, in one run.

Writes once, to the user cache directory, a random-weight CoDA directory in the real 1.7B config
(hidden 2048 x 28 layers, 151,936-row vocabulary, the real tokenizer; bf16 safetensors, ~3.9 GB,
written shard by shard so RAM stays low), then measures interleaved on this CPU:

- cold request: a new document (no stored context), the server's decode (editor preset: dual cache,
  blocks of 8, tau 0.9, <= 16 steps, the server's vicinity refresh, stop when the hole ended);
- warm request: one character typed after that completion (the stored context is reused);
- AR: `transformers` `Qwen3ForCausalLM.generate` of the same number of tokens with its KV cache, on
  the same weights (shared tensors, not a copy) and the same context tokens;
- per-forward cost: a cached step and a full refresh against the weight-read floor (weight bytes /
  bandwidth of a large tensor copy);
- agreement with exact decoding (cache 'none', same schedule) of each approximation (per-block full
  refresh, vicinity refresh, warm reuse): on the random 1.7B weights (short context, few holes: random
  weights say little) and on the trained default model over single-line holes of stdlib modules that
  the default model never trained on (`coda_bench.engine.STRUCTURED_SOURCES`; the training corpus's
  held-out split is not in the repository).

    coda-bench realsize                       # a few minutes on a 2-core CPU
    coda-bench realsize --repeats 1 --skip-random-agreement
Writes benchmarks/results/realsize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from coda_bench.engine import STRUCTURED_SOURCES, measure_bandwidth, weight_bytes
from coda_bench.load_rss import write_random_full_size
from coda_model import default_model_path
from coda_model.checkpoint import load_model
from coda_model.context_reuse import ContextSlot, ContextStore
from coda_model.decode_config import DecodeConfig
from coda_model.engine import Engine, token_agreement
from coda_train.eval.heldout import line_hole

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SERVER_VICINITY = DecodeConfig.editor().vicinity   # what the server decodes with


def realsize_dir(cache_dir: Optional[Path] = None) -> Path:
    """The random 1.7B directory, written on first use (the index file is written last: its presence
    means the directory is complete)."""
    import platformdirs
    path = (cache_dir or Path(platformdirs.user_cache_dir("coda-lsp"))) / "coda-1p7b-random-bf16"
    if not (path / "model.safetensors.index.json").is_file():
        print(f"writing the random 1.7B directory to {path} (once, ~3.9 GB)", file=sys.stderr)
        write_random_full_size(path, max_shard_bytes=700 * 2**20)
    return path


def server_config() -> DecodeConfig:
    return DecodeConfig.editor()


# ----------------------------------------------------------------------------------------------- holes
def stdlib_line_holes(limit: int) -> list[tuple[str, str, str, str]]:
    """(name, prefix, middle line, suffix): the first non-blank line from the middle of each held-out module."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    holes = []
    for pattern in STRUCTURED_SOURCES:
        for path in sorted(stdlib.glob(pattern)):
            text = path.read_text(encoding="utf-8", errors="replace")
            hole = line_hole(path.name, text, before=len(text), after=len(text))   # the held-out rule, whole file
            if hole is None:
                continue
            line = hole["canonical_solution"]
            indent = line[: len(line) - len(line.lstrip())]
            holes.append((hole["task_id"], hole["prompt"] + indent, line.strip(), "\n" + hole["suffix"]))
    return holes[:limit]


def block_hole(tok, context: int) -> tuple[list[int], list[int]]:
    """A block hole after a new `def` line in ~`context` tokens of stdlib code (3/4 before, 1/4 after)."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / "_pyio.py").read_text(encoding="utf-8")
    cut = text.index("    def readline(self, size=-1):\n")
    head = text[:cut] + "    def readline(self, size=-1):\n        "
    tail = "\n\n" + text[text.index("    def __iter__(self):", cut):]
    pre, suf = tok.encode(head), tok.encode(tail)
    n_suf = context // 4
    return pre[len(pre) - (context - n_suf):], suf[:n_suf]


# ----------------------------------------------------------------------------------------------- decoding
def decode(engine: Engine, prefix: list[int], suffix: list[int], length: int, config: DecodeConfig,
           slot: Optional[ContextSlot] = None, stop: bool = True):
    state, steps = None, 0
    for state in engine.infill(prefix, suffix, length=length, config=config, context=slot, stop_when_ended=stop):
        steps += 1
    return state, steps


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def hf_twin(loaded):
    """transformers' Qwen3ForCausalLM holding the very same weight tensors (no second copy)."""
    import transformers
    cfg = loaded.config
    hf_cfg = transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, max_position_embeddings=4096,
        pad_token_id=cfg.pad_token_id, eos_token_id=None, attn_implementation="sdpa", dtype=loaded.dtype)
    with torch.device("meta"):
        hf = transformers.Qwen3ForCausalLM(hf_cfg)
    state = loaded.model.state_dict()
    missing, _ = hf.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if "rotary" not in k]
    if missing:
        raise SystemExit(f"transformers twin lacks {missing[:3]}")
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=hf_cfg)   # its inv_freq buffer, off the meta device
    return hf.eval()


def ar_generate(hf, ids: list[int], new_tokens: int) -> None:
    x = torch.tensor([ids])
    with torch.no_grad():
        hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    do_sample=False, use_cache=True, pad_token_id=0)


def forward_costs(engine: Engine, prefix: list[int], suffix: list[int], length: int, repeats: int) -> dict:
    """A full refresh of the sequence and a cached (dual) step of one 8-token block window, seconds."""
    model = engine.model
    x = torch.tensor([prefix + [engine.mask_id] * length + suffix])
    h0 = len(prefix)
    w0, w1 = h0 - 1, h0 + 8
    full, step = [], []
    with torch.no_grad():
        for _ in range(repeats):
            dt, out = timed(lambda: model(x, use_cache=True, logits_index=torch.arange(w0, w1)))
            full.append(dt)
            past = [(torch.cat((k[:, :, :w0], k[:, :, w1:]), 2), torch.cat((v[:, :, :w0], v[:, :, w1:]), 2))
                    for k, v in out.key_values]
            pos = torch.arange(w0, w1)[None]
            dt, _ = timed(lambda: model(x[:, w0:w1], position_ids=pos, past_key_values=past,
                                        logits_index=torch.arange(w1 - w0)))
            step.append(dt)
    return {"refresh_s": min(full), "cached_step_s": min(step)}


# ----------------------------------------------------------------------------------------------- agreement
def agreement(engine: Engine, holes: list[tuple[list[int], list[int], list[int]]], length: int) -> dict:
    """Text match and token agreement of each approximation with exact decoding (cache 'none', same schedule).

    holes: (prefix, suffix, prefix before the last character was typed) token ids."""
    base = DecodeConfig.editor()
    modes = {"full refresh per block (before)": replace(base, vicinity=None), "vicinity 0": replace(base, vicinity=0),
             f"vicinity {SERVER_VICINITY}": replace(base, vicinity=SERVER_VICINITY)}
    scores: dict[str, list[tuple[bool, float]]] = {m: [] for m in [*modes, "warm reuse (one char typed)"]}
    for prefix, suffix, before in holes:
        exact, _ = decode(engine, prefix, suffix, length, replace(base, cache="none"), stop=False)
        text = engine.hole_text(exact)

        def score(state) -> tuple[bool, float]:
            return engine.hole_text(state) == text, token_agreement(state.tokens, exact.tokens)
        for name, cfg in modes.items():
            scores[name].append(score(decode(engine, prefix, suffix, length, cfg, stop=False)[0]))
        slot = ContextSlot(ContextStore(), "doc")
        decode(engine, before, suffix, length, server_config(), slot)
        scores["warm reuse (one char typed)"].append(
            score(decode(engine, prefix, suffix, length, server_config(), slot, stop=False)[0]))
    return {name: {"text_match": round(statistics.mean(s[0] for s in v), 3),
                   "token_agreement": round(statistics.mean(s[1] for s in v), 3), "holes": len(v)}
            for name, v in scores.items()}


def typed_holes(tok, rows: list[tuple[str, str, str, str]], budget: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Each hole, and the same hole one character earlier (the last character of the prefix not yet typed)."""
    out = []
    for _, pre, _, suf in rows:
        p, s, b = tok.encode(pre), tok.encode(suf), tok.encode(pre[:-1])
        keep = budget * 3 // 4
        cut = max(0, len(p) - keep)
        out.append((p[cut:], s[: budget - keep], b[cut:]))
    return out


# ----------------------------------------------------------------------------------------------- main
def machine() -> dict:
    flags = ""
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cores": os.cpu_count(), "amx": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="coda-bench realsize", description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, default=None, help="where the random 1.7B directory lives")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--hole", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="default: the server's (half the cores)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                    help="auto = the server's choice on this CPU (bf16 only with AMX, measured)")
    ap.add_argument("--model", type=Path, default=None, help="measure this directory instead of the random 1.7B one")
    ap.add_argument("--default-holes", type=int, default=30, help="held-out stdlib line holes for the default model")
    ap.add_argument("--random-holes", type=int, default=2, help="holes for agreement on the random 1.7B weights")
    ap.add_argument("--skip-random-agreement", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "realsize.json")
    args = ap.parse_args(argv)
    from coda_lsp.loading import set_cpu_threads
    set_cpu_threads(args.threads)   # the server's own choice unless --threads
    result: dict = {"machine": machine(), "context_tokens": args.context, "hole_tokens": args.hole,
                    "decode": {**server_config().__dict__}}

    # the trained default model first: cheap, and the agreement target is about it
    small = load_model(default_model_path(), device="cpu", dtype="auto")
    rows = stdlib_line_holes(max(args.default_holes, args.random_holes))
    result["default_model_agreement"] = agreement(Engine(small), typed_holes(small.tokenizer, rows[:args.default_holes],
                                                                             args.context), 24)
    result["default_model_holes"] = "single-line holes of stdlib modules held out of its training: " + \
        ", ".join(STRUCTURED_SOURCES)
    print(json.dumps(result["default_model_agreement"], indent=1), file=sys.stderr)
    del small

    path = args.model or realsize_dir(args.cache_dir)
    t0 = time.perf_counter()
    lm = load_model(path, device="cpu", dtype=args.dtype)
    result.update(model=str(path), dtype=str(lm.dtype).removeprefix("torch."), load_s=round(time.perf_counter() - t0, 1))
    engine, tok = Engine(lm), lm.tokenizer
    prefix, suffix = block_hole(tok, args.context)
    hf = hf_twin(lm)
    gb = weight_bytes(lm.model)
    bandwidth = measure_bandwidth(torch.device("cpu"))
    rows_t: dict[str, list[float]] = {"cold_s": [], "warm_s": [], "ar_s": []}
    steps: dict[str, int] = {}
    typed = prefix + tok.encode("x")   # one character typed at the end of the prefix (a new token)
    for r in range(args.repeats):      # interleaved: cold, warm, AR, then again
        store = ContextStore()
        slot = ContextSlot(store, f"doc{r}")
        dt, (state, n) = timed(lambda: decode(engine, prefix, suffix, args.hole, server_config(), slot))
        rows_t["cold_s"].append(dt); steps["cold"] = n
        dt, (state, n) = timed(lambda: decode(engine, typed, suffix, args.hole, server_config(), slot))
        rows_t["warm_s"].append(dt); steps["warm"] = n
        dt, _ = timed(lambda: ar_generate(hf, prefix + suffix, args.hole))
        rows_t["ar_s"].append(dt)
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows_t.items()), file=sys.stderr)
    costs = forward_costs(engine, prefix, suffix, args.hole, args.repeats)
    floor = gb / (bandwidth * 1e9)
    med = {k: statistics.median(v) for k, v in rows_t.items()}
    result.update({
        "seconds": {k: [round(x, 3) for x in v] for k, v in rows_t.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "forwards": steps,
        "cold_over_ar": round(med["cold_s"] / med["ar_s"], 3),
        "warm_over_ar": round(med["warm_s"] / med["ar_s"], 3),
        "weight_gb": round(gb / 1e9, 3), "bandwidth_gb_s": round(bandwidth, 2), "floor_s": round(floor, 3),
        **{k: round(v, 3) for k, v in costs.items()},
        "cached_step_over_floor": round(costs["cached_step_s"] / floor, 2),
        "refresh_over_floor": round(costs["refresh_s"] / floor, 2),
    })
    if not args.skip_random_agreement:   # exact decoding at this size is a full forward per step: short contexts
        short = [(p[-64:], s[:16], b[-64:]) for p, s, b in typed_holes(tok, rows[:args.random_holes], 128)]
        result["random_weights_agreement"] = agreement(engine, short, 16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
