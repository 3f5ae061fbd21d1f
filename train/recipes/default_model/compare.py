"""Side-by-side measurements for the default model and its rivals (held-out loss, infilling).

Why here and not only in `coda-eval`: the comparison needs the *same* numbers for a diffusion model
and an autoregressive one (the AR+FIM rival), on our held-out files, with a fixed seed so two runs are
comparable. `coda-eval` (issue 8) is used for the HumanEval infilling tasks when present; this script
is the fallback and the source of the held-out numbers.

- `heldout`: the first `--rows` rows of `seq`-token windows of the held-out files (whole packages and
  stdlib modules never trained on). Diffusion: the CoDA objective (1/sigma-weighted masked CE / B*L) at
  a fixed grid of sigma, and masked-token accuracy at sigma = 0.15 / 0.5; AR (`--ar`): next-token CE.
- `infill-nll`: teacher-forced NLL of the canonical middles (AR exact, diffusion ELBO): a graded
  signal where exact match is 0 for every small model.
- `infill`: HumanEval Single/MultiLine infilling, first `--limit` problems. Diffusion models go
  through `coda_model.engine.Engine.infill` with a hole budget of `ceil(1.5 * n) + 8` tokens (as coda-eval) (n = the
  canonical middle's length; pads let the model end early); AR+FIM models decode greedily after
  `<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>` until eos/pad or the same budget. Exact match compares
  whitespace-normalised lines. The trivial baseline predicts the most frequent line of our training
  corpus for every hole; `trivial-prev` repeats the last non-empty line before the hole.

Usage:
    .venv/bin/python train/recipes/default_model/compare.py heldout MODEL_DIR [--ar] --out x.json
    .venv/bin/python train/recipes/default_model/compare.py infill MODEL_DIR [--ar] --task single --limit 200
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from coda_model.ar_decode import greedy_decode
from coda_model.checkpoint import load_model
from coda_train.eval.datasets import default_data_dir
from coda_train.eval.heldout import heldout_line_holes

REPO = Path(__file__).resolve().parents[3]
SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


def heldout_rows(tok, data: Path, seq: int, rows: int) -> torch.Tensor:
    ids: list[int] = []
    for line in (data / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        ids += tok.encode(json.loads(line)["text"]) + [tok.eos_id]
        if len(ids) >= seq * rows:
            break
    n = min(rows, len(ids) // seq)
    return torch.tensor(ids[: n * seq]).view(n, seq)


@torch.inference_mode()
def heldout(loaded, data: Path, seq: int, rows: int, ar: bool, batch: int = 8) -> dict:
    model, tok = loaded.model, loaded.tokenizer
    x = heldout_rows(tok, data, seq, rows)
    out: dict = {"rows": x.shape[0], "seq": seq, "tokens": x.numel()}
    if ar:
        total, count = 0.0, 0
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            logits = model(xb, causal=True).logits.float()
            total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), xb[:, 1:].reshape(-1), reduction="sum").item()
            count += xb[:, 1:].numel()
        out["ar_nll_per_token"] = total / count
        return out
    gen = torch.Generator().manual_seed(1234)
    per_sigma, acc = {}, {}
    for sigma in SIGMAS:
        loss_sum, correct, masked_total = 0.0, 0, 0
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            m = torch.rand(xb.shape, generator=gen) < sigma
            m[:, 0] = False
            logits = model(xb.masked_fill(m, tok.mask_id)).logits.float()
            tgt_mask = m[:, 1:]
            pred = logits[:, :-1][tgt_mask]
            tgt = xb[:, 1:][tgt_mask]
            loss_sum += F.cross_entropy(pred, tgt, reduction="sum").item() / sigma
            correct += int((pred.argmax(-1) == tgt).sum())
            masked_total += int(tgt_mask.sum())
        per_sigma[str(sigma)] = loss_sum / x.numel()  # CoDA normalisation: / (B * L)
        acc[str(sigma)] = correct / max(1, masked_total)
    out["diffusion_loss_by_sigma"] = per_sigma
    out["diffusion_loss_mean"] = sum(per_sigma.values()) / len(per_sigma)  # ~ the objective's expectation over sigma
    out["masked_token_accuracy_by_sigma"] = acc
    return out


def load_infill(task: str, data_dir: Path, limit: int, corpus: Path | None = None) -> list[dict]:
    if task == "heldout-line":
        return heldout_line_holes(corpus, limit)
    name = {"single": "HumanEval-SingleLineInfilling", "multi": "HumanEval-MultiLineInfilling"}[task]
    rows = []
    with gzip.open(data_dir / "humaneval-infilling" / f"{name}.jsonl.gz", "rt") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    return rows


def trim_at_suffix(pred: str, suffix: str) -> str:
    """Cut the prediction where it starts repeating the suffix's first non-empty line.

    Applied to both model kinds (the LSP's post-processing does the same): our AR+FIM rows have no
    end-of-middle token, so an AR model cannot stop a hole by itself and runs on into the suffix.
    """
    first = next((l.strip() for l in suffix.splitlines() if l.strip()), None)
    if first is None:
        return pred
    lines = pred.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if i > 0 and line.strip() == first:
            return "".join(lines[:i])
    return pred


def norm(text: str) -> list[str]:
    return [" ".join(l.split()) for l in text.strip("\n").splitlines() if l.strip()]


def ar_fim_infill(loaded, prefix: str, suffix: str, budget: int) -> str:
    model, tok = loaded.model, loaded.tokenizer
    f = tok.fim_ids
    ids = [f["<|fim_prefix|>"]] + tok.encode(prefix) + [f["<|fim_suffix|>"]] + tok.encode(suffix) + [f["<|fim_middle|>"]]
    stop = {tok.eos_id, tok.pad_id, f["<|fim_pad|>"], f["<|fim_prefix|>"], f["<|fim_suffix|>"]}
    gen: list[int] = []
    for nxt in greedy_decode(model, ids, budget):
        if nxt in stop:
            break
        gen.append(nxt)
    return tok.decode(gen)


def diffusion_infill(loaded, engine, prefix: str, suffix: str, budget: int, steps: int, threshold,
                     block_length=None, alg: str = "entropy", cache: str = "none") -> str:
    from coda_model.engine import DecodeConfig  # noqa: PLC0415

    tok = loaded.tokenizer
    cfg = DecodeConfig(steps=min(steps, budget), alg=alg, temperature=0.0, threshold=threshold, seed=0,
                       block_length=block_length, cache=cache)
    state = None
    for state in engine.infill(tok.encode(prefix), tok.encode(suffix), length=budget, config=cfg):
        pass
    return engine.hole_text(state)


@torch.inference_mode()
def infill_nll(args, loaded) -> dict:
    """Per-token NLL of the canonical middles given prefix + suffix (teacher-forced, no decoding).

    AR+FIM: exact -log p(middle | <fim_prefix>p<fim_suffix>s<fim_middle>). Diffusion: the masked-diffusion
    ELBO restricted to the hole, E_sigma[(1/sigma) * sum over masked middle tokens of CE] / n with
    `--nll-samples` stratified sigmas; the ELBO bounds the NLL from above, so this comparison is
    conservative against the diffusion model. `--order l2r` instead gives the diffusion model's exact
    NLL when it decodes the hole left to right, one token per step (position i scored with the middle
    before it revealed and the rest masked): the likelihood of a real decoding process, so a proper
    NLL like AR's, and tighter than the ELBO's average over random orders.
    """
    model, tok = loaded.model, loaded.tokenizer
    rows = load_infill(args.task, Path(args.data_dir), args.limit, Path(args.data))
    gen = torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    for row in rows:
        p, m, s = tok.encode(row["prompt"])[-384:], tok.encode(row["canonical_solution"]), tok.encode(row["suffix"])[:128]
        if not m:
            continue
        if args.ar:
            f = tok.fim_ids
            ids = [f["<|fim_prefix|>"]] + p + [f["<|fim_suffix|>"]] + s + [f["<|fim_middle|>"]] + m
            x = torch.tensor([ids])
            logits = model(x, causal=True).logits.float()
            start = len(ids) - len(m)
            total += F.cross_entropy(logits[0, start - 1:-1], x[0, start:], reduction="sum").item()
        elif args.order == "l2r":
            x = torch.tensor([p + m + s])
            lo = len(p)
            for chunk in torch.arange(len(m)).split(32):   # one row per scored position, 32 rows per forward
                batch = x.repeat(len(chunk), 1)
                for r, i in enumerate(chunk.tolist()):
                    batch[r, lo + i: lo + len(m)] = tok.mask_id
                logits = model(batch, logits_index=(lo + chunk - 1)[:, None]).logits.float()[:, 0]
                total += F.cross_entropy(logits, x[0, lo + chunk], reduction="sum").item()
        else:
            x = torch.tensor([p + m + s])
            lo, hi = len(p), len(p) + len(m)
            est = 0.0
            k = args.nll_samples
            for i in range(k):
                sigma = (i + torch.rand((), generator=gen).item()) / k
                sigma = max(sigma, 1e-3)
                masked = torch.zeros_like(x, dtype=torch.bool)
                masked[0, lo:hi] = torch.rand(hi - lo, generator=gen) < sigma
                if not masked.any():
                    continue
                logits = model(x.masked_fill(masked, tok.mask_id)).logits.float()
                tgt = masked[0, 1:]
                est += F.cross_entropy(logits[0, :-1][tgt], x[0, 1:][tgt], reduction="sum").item() / sigma
            total += est / k
        count += len(m)
    return {"task": args.task, "n": len(rows), "middle_tokens": count, "nll_per_middle_token": total / max(1, count),
            "kind": "ar_exact_nll" if args.ar else ("diffusion_left_to_right_nll" if args.order == "l2r"
                                                    else f"diffusion_elbo_{args.nll_samples}_samples")}


def most_frequent_line(data: Path) -> str:
    counts: Counter = Counter()
    for i, line in enumerate((data / "train.jsonl").read_text(encoding="utf-8").splitlines()):
        if i >= 2000:
            break
        for l in json.loads(line)["text"].splitlines():
            s = l.strip()
            if s and not s.startswith("#") and s not in ('"""', "'''"):
                counts[s] += 1
    return counts.most_common(1)[0][0]


def infill(args, loaded) -> dict:
    rows = load_infill(args.task, Path(args.data_dir), args.limit, Path(args.data))
    engine = None
    if loaded is not None and not args.ar:
        from coda_model.engine import Engine  # noqa: PLC0415

        engine = Engine(loaded)
    trivial = most_frequent_line(Path(args.data)) if loaded is None else None
    exact, sim, examples, scores, t0 = 0, 0.0, [], [], time.time()
    for row in rows:
        if loaded is None and args.model == "trivial-prev":
            prev = [l for l in row["prompt"].splitlines() if l.strip()]
            pred = prev[-1] + "\n" if prev else ""
        elif loaded is None:
            pred = "    " + trivial
        else:
            n = len(loaded.tokenizer.encode(row["canonical_solution"]))
            budget = math.ceil(1.5 * n) + 8
            if args.ar:
                pred = ar_fim_infill(loaded, row["prompt"], row["suffix"], budget)
            else:
                pred = diffusion_infill(loaded, engine, row["prompt"], row["suffix"], budget, args.steps, args.threshold,
                                        args.block_length, args.alg, args.cache)
        pred = trim_at_suffix(pred, row["suffix"])
        if args.first_line:  # what the LSP shows for a single-line hole: it stops at the end of the line
            pred = next((l for l in pred.splitlines(keepends=True) if l.strip()), "")
        got, want = norm(pred), norm(row["canonical_solution"])
        ok = got == want
        ratio = difflib.SequenceMatcher(None, "\n".join(got), "\n".join(want)).ratio()
        exact += ok
        sim += ratio
        scores.append({"task_id": row["task_id"], "exact": ok, "edit_similarity": ratio, "pred": pred})
        if len(examples) < 5:
            examples.append({"task_id": row["task_id"], "target": row["canonical_solution"], "pred": pred, "exact": ok})
    return {"task": args.task, "n": len(rows), "exact_match": exact / max(1, len(rows)),
            "edit_similarity": sim / max(1, len(rows)), "seconds": round(time.time() - t0, 1),
            "budget": "ceil(1.5*n)+8", "trivial_line": trivial, "examples": examples,
            "scores": scores}  # per problem, so two models can be compared paired (results_table.py)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("heldout", "infill", "infill-nll"))
    ap.add_argument("model", help="model directory (export or checkpoint); for infill also the baselines "
                    "'trivial' (most frequent training line) and 'trivial-prev' (repeat the line before the hole)")
    ap.add_argument("--ar", action="store_true", help="the model is autoregressive (causal attention, FIM prompts)")
    ap.add_argument("--data", default=str(REPO / "data" / "default_model"))
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--task", choices=("single", "multi", "heldout-line"), default="single",
                    help="HumanEval single/multi-line infilling, or one line per held-out corpus file (validation)")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--steps", type=int, default=64, help="max denoising steps per hole (diffusion)")
    ap.add_argument("--threshold", type=float, default=None, help="confidence-threshold parallel decoding")
    ap.add_argument("--block-length", type=int, default=None, help="semi-autoregressive blocks (diffusion)")
    ap.add_argument("--alg", default="entropy", help="unmasking order (diffusion)")
    ap.add_argument("--first-line", action="store_true", help="keep only the first non-blank line of a prediction")
    ap.add_argument("--cache", default="none", choices=("none", "prefix", "dual"),
                    help="KV cache (diffusion); the LSP decodes with --steps 16 --threshold 0.9 --cache dual "
                         "--block-length 8 (coda_model.DecodeConfig.editor())")
    ap.add_argument("--out", default="")
    ap.add_argument("--nll-samples", type=int, default=8, help="sigma samples per middle (diffusion ELBO)")
    ap.add_argument("--order", choices=("elbo", "l2r"), default="elbo",
                    help="diffusion infill-nll: the ELBO over random orders, or exact left-to-right decoding NLL")
    ap.add_argument("--dtype", default="float32", help="float32 (default, for losses) or bfloat16 (as shipped)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy shared CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = None if args.model in ("trivial", "trivial-prev") else load_model(args.model, device="cpu", dtype=args.dtype)
    if args.what == "heldout":
        res = heldout(loaded, Path(args.data), args.seq, args.rows, args.ar)
    elif args.what == "infill-nll":
        res = infill_nll(args, loaded)
    else:
        res = infill(args, loaded)
    res["model"] = args.model
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
