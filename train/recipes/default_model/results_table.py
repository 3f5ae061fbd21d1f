"""Markdown tables of the default model's measurements (from the JSON files `compare.py` writes).

Why: the numbers in MODEL_CARD.md and docs/default_model.md are copied from here, so every cell
traces back to one JSON file under runs/default_model/eval/.

Usage:
    .venv/bin/python train/recipes/default_model/results_table.py [--eval runs/default_model/eval]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MODELS = [  # (file suffix, label, training tokens after the AR warm-up)
    ("long", "**default model**: AR warm-up → adapt → diffusion stages 3–5", "9.42 M"),
    ("arfim_long", "**AR+FIM rival at the same budget**: AR warm-up → AR+FIM on stage 3's rows, then 2,150 steps "
                   "of stage 5's rows", "9.42 M"),
    ("cont", "default model continued: 1,600 more steps of stage 5's mixture (seed 6)", "15.97 M"),
    ("arfim_cont", "AR+FIM rival continued the same way: 1,600 more steps of AR+FIM (seed 6)", "15.97 M"),
    ("final", "default model after stage 4", "1.23 M"),
    ("pre", "same, after stage 3 only", "0.61 M"),
    ("scratch", "diffusion from scratch, stages 3–4 without the AR warm-up", "1.23 M"),
    ("adapted", "AR warm-up weights run bidirectionally (0 diffusion steps)", "0"),
    ("arfim_pre", "AR+FIM rival at stage 3's budget", "0.61 M"),
    ("ar", "the AR warm-up alone, as AR+FIM", "0"),
    ("trivial", "trivial: most frequent training line", "–"),
    ("trivial_prev", "trivial: repeat the line before the hole", "–"),
]


PAIRS = [  # (diffusion key, AR+FIM key) trained on the same tokens: their decoded holes are compared paired
    ("long", "arfim_long"),
    ("cont", "arfim_cont"),
]


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a − b over the same problems and its 95% percentile-bootstrap interval.

    Why: two models' edit similarities 0.01 apart over 200 problems can be noise. Resampling problems
    (not models) keeps each problem's pairing, so the interval reflects how much the *difference* varies.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired scores need the same non-zero number of problems, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_scores(x: dict, y: dict) -> tuple[list[float], list[float]]:
    """Edit similarities of the problems both runs scored, in the same order."""
    sx = {r["task_id"]: r["edit_similarity"] for r in x.get("scores", [])}
    sy = {r["task_id"]: r["edit_similarity"] for r in y.get("scores", [])}
    common = [t for t in sx if t in sy]
    return [sx[t] for t in common], [sy[t] for t in common]


def paired_lines(ev: Path) -> list[str]:
    out = []
    for dkey, akey in PAIRS:
        cells = []
        for task in ("single", "multi"):
            a, b = paired_scores(load(ev / f"{task}_{dkey}.json"), load(ev / f"{task}_{akey}.json"))
            if a:
                mean, lo, hi = paired_bootstrap(a, b)
                cells.append(f"{task}-line {mean:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] over {len(a)} problems")
        if cells:
            out.append(f"- edit similarity, `{dkey}` − `{akey}` (diffusion − AR+FIM, paired): " + "; ".join(cells))
    return out


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def pair(a: dict, b: dict, key: str = "nll_per_middle_token") -> str:
    return f"{fmt(a.get(key))} / {fmt(b.get(key))}" if a or b else "–"


def render(ev: Path) -> str:
    """Two tables: losses and likelihoods, then decoded holes. A model without JSON files is left out."""
    out = ["| model | tokens after the AR warm-up | held-out diffusion loss (mean over σ) | masked acc σ=0.1 / 0.5 |"
           " held-out AR NLL/token | infill NLL, diffusion ELBO (single / multi) |"
           " infill NLL, exact left-to-right (single / multi) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, label, tokens in MODELS:
        h = load(ev / f"heldout_{key}.json")
        ns, nm = load(ev / f"nll_single_{key}.json"), load(ev / f"nll_multi_{key}.json")
        ls, lm = load(ev / f"nll_l2r_single_{key}.json"), load(ev / f"nll_l2r_multi_{key}.json")
        if not (h or ns or nm):
            continue
        acc = h.get("masked_token_accuracy_by_sigma", {})
        accs = f"{fmt(acc.get('0.1'))} / {fmt(acc.get('0.5'))}" if acc else "–"
        ar = ns.get("kind") == "ar_exact_nll"   # an AR model's NLL is already its left-to-right NLL
        elbo, l2r = ("–", pair(ns, nm)) if ar else (pair(ns, nm), pair(ls, lm))
        out.append(f"| {label} | {tokens} | {fmt(h.get('diffusion_loss_mean'))} | {accs} | {fmt(h.get('ar_nll_per_token'))} |"
                   f" {elbo} | {l2r} |")
    out += ["", "| model | HumanEval single-line EM | edit sim. | multi-line EM | edit sim. | problems (single / multi) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for key, label, _ in MODELS:
        s, m = load(ev / f"single_{key}.json"), load(ev / f"multi_{key}.json")
        if not (s or m):
            continue
        out.append(f"| {label} | {fmt(s.get('exact_match'))} | {fmt(s.get('edit_similarity'))} | {fmt(m.get('exact_match'))} |"
                   f" {fmt(m.get('edit_similarity'))} | {s.get('n', '–')} / {m.get('n', '–')} |")
    paired = paired_lines(ev)
    if paired:
        out += [""] + paired
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default="runs/default_model/eval")
    args = ap.parse_args(argv)
    print(render(Path(args.eval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
