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
    ("cont", "**default model (shipped)**: AR warm-up → adapt → diffusion stages 3–6", "15.97 M"),
    ("arfim_cont", "**AR+FIM rival at the same budget**: AR warm-up → AR+FIM on stage 3's rows, 2,150 steps of "
                   "stage 5's rows, then stage 6's 1,600", "15.97 M"),
    ("long", "the default model before stage 6 (shipped until 2026-11-29)", "9.42 M"),
    ("arfim_long", "the AR+FIM rival before stage 6", "9.42 M"),
    ("final", "default model after stage 4", "1.23 M"),
    ("pre", "same, after stage 3 only", "0.61 M"),
    ("scratch", "diffusion from scratch, stages 3–4 without the AR warm-up", "1.23 M"),
    ("adapted", "AR warm-up weights run bidirectionally (0 diffusion steps)", "0"),
    ("arfim_pre", "AR+FIM rival at stage 3's budget", "0.61 M"),
    ("ar", "the AR warm-up alone, as AR+FIM", "0"),
    ("trivial", "trivial: most frequent training line", "–"),
    ("trivial_prev", "trivial: repeat the line before the hole", "–"),
]
LINE_VIEW = [  # (file suffix, label): first line only, as the LSP shows a line hole (compare.py --first-line)
    ("cont_lsp8", "shipped, LSP decode, blocks of 8 (the server's default)"),
    ("cont_lsp16", "shipped, LSP decode, blocks of 16"),
    ("cont_lsp32", "shipped, LSP decode, one 32-token block (the server's default before 2026-11-29)"),
    ("arfim_cont", "AR+FIM rival, same budget"),
    ("long_lsp8", "before stage 6, blocks of 8"),
    ("long_lsp16", "before stage 6, blocks of 16"),
    ("long_lsp32", "before stage 6, one 32-token block"),
    ("arfim_long", "AR+FIM rival before stage 6"),
]


PAIRS = [  # (file stem A, file stem B): edit similarity of A − B on the same problems
    ("single_cont", "single_arfim_cont"), ("multi_cont", "multi_arfim_cont"),
    ("single_long", "single_arfim_long"), ("multi_long", "multi_arfim_long"),
    ("fl_heldout-line_cont_lsp8", "fl_heldout-line_arfim_cont"), ("fl_single_cont_lsp8", "fl_single_arfim_cont"),
    ("fl_heldout-line_cont_lsp8", "fl_heldout-line_long_lsp8"), ("fl_single_cont_lsp8", "fl_single_long_lsp8"),
    ("fl_heldout-line_cont_lsp8", "fl_heldout-line_cont_lsp32"), ("fl_single_cont_lsp8", "fl_single_cont_lsp32"),
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
    for a, b in PAIRS:
        x, y = paired_scores(load(ev / f"{a}.json"), load(ev / f"{b}.json"))
        if x:
            mean, lo, hi = paired_bootstrap(x, y)
            out.append(f"- `{a}` − `{b}`: {mean:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] over {len(x)} problems")
    return out


def line_view(ev: Path) -> list[str]:
    out = ["| model and decode | held-out lines EM | edit sim. | HumanEval single-line EM | edit sim. |",
           "| --- | --- | --- | --- | --- |"]
    for key, label in LINE_VIEW:
        h, s = load(ev / f"fl_heldout-line_{key}.json"), load(ev / f"fl_single_{key}.json")
        if h or s:
            out.append(f"| {label} | {fmt(h.get('exact_match'))} | {fmt(h.get('edit_similarity'))} |"
                       f" {fmt(s.get('exact_match'))} | {fmt(s.get('edit_similarity'))} |")
    return out if len(out) > 2 else []


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
    view = line_view(ev)
    if view:
        out += ["", "What an editor shows on a line hole (first line of the prediction):", ""] + view
    paired = paired_lines(ev)
    if paired:
        out += ["", "Edit similarity differences, paired over the same problems (bootstrap):", ""] + paired
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default="runs/default_model/eval")
    args = ap.parse_args(argv)
    print(render(Path(args.eval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
