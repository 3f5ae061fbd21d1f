"""`coda-bench realsize`: the kernel table at the real CoDA-1.7B shape, through the real language server, in one run.

Writes once, to the user cache directory, a random-weight CoDA directory in the real 1.7B config
(hidden 2048 x 28 layers, 151,936-row vocabulary, the real tokenizer; bf16 safetensors, ~3.9 GB,
written shard by shard so RAM stays low). Then, per kernel (float32, bfloat16, int8: `coda_model.kernels`),
one after another on this CPU:

- through a real LSP server (`coda_bench.realsize_server`): a cold request (new document) and a warm
  one (one character typed), the server's decode (editor preset) of a 32-token block hole in 512
  context tokens; the server's RSS;
- in this process, the same weights: a cached window step and a 512-token refresh against the
  weight-read floor of that kernel (its weight bytes / the bandwidth of a large copy); the relative
  error of the final hidden states and the top-1 agreement of the logits against fp32 on real code;
- AR: `transformers` `Qwen3ForCausalLM.generate` of 32 tokens with its KV cache on the same weights
  (shared tensors; for int8 the same Int8Linear modules), in bf16 and int8.

And on the trained default model: decode agreement of each kernel with fp32 exact decoding over
single-line holes of stdlib modules it never trained on (the kernel alone: exact decoding in both;
and the server's decode in that kernel against fp32 exact).

    coda-bench realsize                          # tens of minutes on a 2-core CPU
    coda-bench realsize --kernels int8,bfloat16 --repeats 1 --skip-ar
Writes benchmarks/results/realsize.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import sysconfig
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from coda_bench.engine import STRUCTURED_SOURCES, measure_bandwidth
from coda_bench.load_rss import write_random_full_size
from coda_model import default_model_path
from coda_model.checkpoint import load_model
from coda_model.context_reuse import ContextSlot
from coda_model.decode_config import DecodeConfig
from coda_model.engine import Engine, token_agreement
from coda_model.int8 import weight_bytes
from coda_train.eval.heldout import line_hole

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SERVER_VICINITY = DecodeConfig.editor().vicinity   # what the server decodes with
KERNEL_SETTINGS = {"float32": {"dtype": "float32", "quantize": "none"},
                   "bfloat16": {"dtype": "bfloat16", "quantize": "none"},
                   "int8": {"dtype": "auto", "quantize": "int8"}}


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


def load_kernel(path: Path, kernel: str, threads: Optional[int] = None):
    """The model with one kernel, its threads measured (or given) as the server does."""
    from coda_lsp.loading import kernel_cache_path
    k = KERNEL_SETTINGS[kernel]
    return load_model(path, device="cpu", dtype=k["dtype"], quantize=k["quantize"], kernel_cache=kernel_cache_path(),
                      threads=threads)


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
    """transformers' Qwen3ForCausalLM holding the very same weights (no second copy): shared tensors, and for
    the int8 kernel the very same Int8Linear / Int8Embedding modules (so AR runs the same int8 kernel)."""
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
    from coda_model.int8 import Int8Embedding, Int8Linear
    shared = [(n, m) for n, m in loaded.model.named_modules() if isinstance(m, (Int8Linear, Int8Embedding))]
    for name, module in shared:
        parent, _, child = name.rpartition(".")
        setattr(hf.get_submodule(parent) if parent else hf, child, module)
    state = loaded.model.state_dict()
    missing, _ = hf.load_state_dict(state, strict=False, assign=True)
    swapped = {n for n, _ in shared}
    missing = [k for k in missing if "rotary" not in k and k.rsplit(".", 1)[0] not in swapped]
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
def typed_holes(tok, rows: list[tuple[str, str, str, str]], budget: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Each hole, and the same hole one character earlier (the last character of the prefix not yet typed)."""
    out = []
    for _, pre, _, suf in rows:
        p, s, b = tok.encode(pre), tok.encode(suf), tok.encode(pre[:-1])
        keep = budget * 3 // 4
        cut = max(0, len(p) - keep)
        out.append((p[cut:], s[: budget - keep], b[cut:]))
    return out


# ----------------------------------------------------------------------------------------------- kernels
def kernel_agreement(path: Path, kernels: list[str], rows, context: int, length: int) -> dict:
    """Per kernel on the default model: exact decoding vs fp32 exact decoding (the kernel's own error),
    and the server's decode in that kernel vs fp32 exact (what a user gets, against the reference)."""
    holes = typed_holes(load_model(path, device="cpu", dtype="float32", quantize="none").tokenizer, rows, context)
    exact_cfg = replace(DecodeConfig.editor(), cache="none")
    ref_lm = load_model(path, device="cpu", dtype="float32", quantize="none", threads=1)
    ref = Engine(ref_lm)
    reference = [decode(ref, p, s, length, exact_cfg, stop=False)[0] for p, s, _ in holes]
    out = {}
    for kernel in kernels:
        lm = load_kernel(path, kernel, threads=1)
        eng = Engine(lm)
        scores = {"exact": [], "server decode": []}
        for (p, s, _), r in zip(holes, reference):
            text = ref.hole_text(r)
            for mode, cfg in (("exact", exact_cfg), ("server decode", server_config())):
                state = decode(eng, p, s, length, cfg, stop=False)[0]
                scores[mode].append((eng.hole_text(state) == text, token_agreement(state.tokens, r.tokens)))
        out[kernel] = {mode: {"text_match": round(statistics.mean(x[0] for x in v), 3),
                              "token_agreement": round(statistics.mean(x[1] for x in v), 3), "holes": len(v)}
                       for mode, v in scores.items()}
        out[kernel]["meets_bar"] = (out[kernel]["exact"]["token_agreement"] >= 0.9
                                    and out[kernel]["exact"]["text_match"] >= 0.85)
        print(f"default model {kernel}: {out[kernel]}", file=sys.stderr)
    return out


def code_ids(tok, n: int) -> list[int]:
    """n tokens of real code (stdlib `_pyio.py`)."""
    text = (Path(sysconfig.get_paths()["stdlib"]) / "_pyio.py").read_text(encoding="utf-8")
    return tok.encode(text)[:n]


def hidden_and_top1(lm, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([ids])
    with torch.no_grad():
        hidden = lm.model(x, return_hidden=True).logits.float()[0]
        top1 = lm.model.lm_head(hidden.to(lm.dtype)).argmax(-1)
    return hidden, top1


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def read_bytes(model) -> int:
    """Bytes a forward reads: every weight but the embedding table (a gather reads a few rows)."""
    return weight_bytes(model) - weight_bytes(model.model.embed_tokens)


def measure_kernel(path: Path, kernel: str, args, prefix, suffix, bandwidth: float, reference) -> tuple[dict, object]:
    t0 = time.perf_counter()
    rss0 = rss_gb()
    lm = load_kernel(path, kernel)
    row: dict = {"load_s": round(time.perf_counter() - t0, 1), "choice": lm.kernel.summary(),
                 "threads": torch.get_num_threads(), "weight_gb": round(weight_bytes(lm.model) / 1e9, 3),
                 "rss_model_gb": round(rss_gb() - rss0, 3)}
    engine = Engine(lm)
    row.update({k: round(v, 4) for k, v in forward_costs(engine, prefix, suffix, args.hole, args.repeats).items()})
    floor = read_bytes(lm.model) / (bandwidth * 1e9)
    row.update(floor_s=round(floor, 4), cached_step_over_floor=round(row["cached_step_s"] / floor, 2),
               refresh_over_floor=round(row["refresh_s"] / floor, 2))
    ids = code_ids(lm.tokenizer, args.context)
    hidden, top1 = hidden_and_top1(lm, ids)
    if reference is None:
        reference = (hidden, top1)
    else:
        h0, t0_ = reference
        row["hidden_relative_error"] = round(float((hidden - h0).norm() / h0.norm()), 5)
        row["top1_agreement"] = round(float((top1 == t0_).float().mean()), 4)
    if kernel in args.ar_kernels and not args.skip_ar:
        hf = hf_twin(lm)
        times = []
        for _ in range(args.repeats):
            dt, _ = timed(lambda: ar_generate(hf, prefix + suffix, args.hole))
            times.append(dt)
        row["ar_s"] = [round(t, 3) for t in times]
        row["ar_p50_s"] = round(statistics.median(times), 3)
        del hf
    print(f"{kernel}: {json.dumps(row)}", file=sys.stderr)
    del engine, lm
    gc.collect()
    return row, reference


# ----------------------------------------------------------------------------------------------- main
def machine() -> dict:
    from coda_model.kernels import cpu_flags, cpu_name, int8_isa_note, physical_cores
    flags = cpu_flags()
    return {"cpu": cpu_name(), "cores": physical_cores(), "amx": "amx_bf16" in flags,
            "avx512": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "int8_dot": int8_isa_note(flags),
            "capability": torch.backends.cpu.get_cpu_capability(), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
            "torch": torch.__version__, "load_average_start": os.getloadavg()}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="coda-bench realsize", description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", type=Path, default=None, help="where the random 1.7B directory lives")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--hole", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kernels", default="float32,bfloat16,int8")
    ap.add_argument("--ar-kernels", default="bfloat16,int8", help="kernels whose transformers AR generate is timed")
    ap.add_argument("--model", type=Path, default=None, help="measure this directory instead of the random 1.7B one")
    ap.add_argument("--default-holes", type=int, default=30, help="held-out stdlib line holes for the default model")
    ap.add_argument("--skip-server", action="store_true", help="no LSP server runs (in-process rows only)")
    ap.add_argument("--skip-ar", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "realsize.json")
    args = ap.parse_args(argv)
    kernels = args.kernels.split(",")
    args.ar_kernels = args.ar_kernels.split(",")
    result: dict = {"machine": machine(), "context_tokens": args.context, "hole_tokens": args.hole,
                    "decode": {**server_config().__dict__}, "kernels": {}}
    if not args.skip_agreement:
        rows = stdlib_line_holes(args.default_holes)
        result["default_model_agreement"] = kernel_agreement(default_model_path(), kernels, rows, args.context, 24)
        result["default_model_holes"] = "single-line holes of stdlib modules held out of its training: " + \
            ", ".join(STRUCTURED_SOURCES)

    path = args.model or realsize_dir(args.cache_dir)
    from coda_model.tokenizer import CodaTokenizer
    tok = CodaTokenizer.from_dir(path)
    prefix, suffix = block_hole(tok, args.context)
    bandwidth = measure_bandwidth(torch.device("cpu"))
    result.update(model=str(path), bandwidth_gb_s=round(bandwidth, 2))
    reference = None
    order = ["float32"] + [k for k in kernels if k != "float32"] if "float32" in kernels else kernels
    settings = {"debounceMs": 0, "minConfidence": 0, "minShownConfidence": 0, "streaming": False, "speculate": False,
                "contextTokens": args.context, "maxTokens": args.hole}
    for kernel in order:
        row: dict = {}
        if not args.skip_server:
            from coda_bench.realsize_server import measure as server_measure
            row["server"] = server_measure(path, {**settings, **KERNEL_SETTINGS[kernel]}, args.repeats)
            print(f"{kernel} server: {json.dumps(row['server'])}", file=sys.stderr)
        inproc, reference = measure_kernel(path, kernel, args, prefix, suffix, bandwidth, reference)
        row.update(inproc)
        result["kernels"][kernel] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")   # each kernel's row is kept as it lands
    ar_bf16 = result["kernels"].get("bfloat16", {}).get("ar_p50_s")
    for kernel, row in result["kernels"].items():
        if ar_bf16 and "server" in row:
            row["cold_over_ar_bf16"] = round(row["server"]["cold_p50_s"] / ar_bf16, 3)
            row["warm_over_ar_bf16"] = round(row["server"]["warm_p50_s"] / ar_bf16, 3)
        if "server" in row and "vmrss_gb" in row["server"]:
            row["server_rss_over_weights"] = round(row["server"]["vmrss_gb"] / row["weight_gb"], 2)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["peak_rss_gb_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
