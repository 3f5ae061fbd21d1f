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

MODELS = [  # (file suffix, label, training tokens after the AR warm-up)
    ("long", "**default model**: AR warm-up → adapt → diffusion stages 3–5", "9.42 M"),
    ("arfim_long", "**AR+FIM rival at the same budget**: AR warm-up → AR+FIM on stage 3's rows, then 2,150 steps "
                   "of stage 5's rows", "9.42 M"),
    ("final", "default model after stage 4", "1.23 M"),
    ("pre", "same, after stage 3 only", "0.61 M"),
    ("scratch", "diffusion from scratch, stages 3–4 without the AR warm-up", "1.23 M"),
    ("adapted", "AR warm-up weights run bidirectionally (0 diffusion steps)", "0"),
    ("arfim_pre", "AR+FIM rival at stage 3's budget", "0.61 M"),
    ("ar", "the AR warm-up alone, as AR+FIM", "0"),
    ("trivial", "trivial: most frequent training line", "–"),
    ("trivial_prev", "trivial: repeat the line before the hole", "–"),
]


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
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default="runs/default_model/eval")
    args = ap.parse_args(argv)
    print(render(Path(args.eval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
