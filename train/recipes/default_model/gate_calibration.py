"""Choose the confidence gate's defaults (minConfidence, minShownConfidence) on real held-out lines.

Why here (a recipe, not benchmarks/): the validation set is the default model's held-out split
(`data/default_model/heldout.jsonl` from build_data.py) and its lines are the ones `compare.py --task
heldout-line` uses, so this lives next to the model it calibrates; it measures quality, not speed.

Each hole goes through the server's own path: the file with the target line blanked to its
indentation, the cursor after the indentation, and the server's pipeline stages
(`coda_lsp.pipeline`: build_context, infer with the editor decode preset, and per gate setting
postprocess = the gate, then the clean-up chain). The model runs once per hole; the token pieces and
their confidences are saved, so the grid of settings is evaluated offline.

For each setting: coverage (share of holes that show anything), precision of what is shown (exact:
the shown first line equals the target line; prefix: it is a correct start of the target line, so
accepting it is right; edit similarity of the first line) and the value a user gets:
a shown suggestion that is a correct prefix earns its length in characters (accepted), any other
costs `--cost` characters (read, judged, dismissed or deleted: Cursor counts a wrong suggestion as
a cost the same way). The default maximises the net accepted characters per request (= per
suggestion shown x coverage; see docs/suggestions.md for why not per suggestion shown alone).

Usage (CPU, a few minutes):
    .venv/bin/python train/recipes/default_model/gate_calibration.py --data data/default_model \\
        --out benchmarks/results/gate_calibration.json --plot docs/suggestions_gate.png
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
GRID = [round(0.1 * i, 1) for i in range(10)]   # 0.0 = off


def decode_holes(model: str, data: Path, limit: int) -> list[dict]:
    """Run the server's path once per held-out line; keep the pieces with their confidences."""
    sys.path.insert(0, str(HERE))
    from compare import heldout_line_holes  # noqa: PLC0415

    from coda_lsp import pipeline  # noqa: PLC0415
    from coda_lsp.documents import Document  # noqa: PLC0415
    from coda_lsp.loading import load_engine  # noqa: PLC0415
    from coda_lsp.options import ServerOptions  # noqa: PLC0415

    opts = ServerOptions(model_path=model)
    lm = load_engine(opts)
    out, t0 = [], time.perf_counter()
    for i, row in enumerate(heldout_line_holes(data, limit)):
        target = row["canonical_solution"].rstrip("\n")
        indent = target[: len(target) - len(target.lstrip(" \t"))]
        text = row["prompt"] + indent + "\n" + row["suffix"]
        doc = Document("file:///heldout/" + row["task_id"].split(":")[0], text, 0, "python")
        ctx = pipeline.build_context(doc, len(row["prompt"]) + len(indent), None, opts)
        job = pipeline.infer(lm, pipeline.infer_request(ctx, opts, 1))
        while not job.done:
            job.step()
        cand = job.candidates()[0]
        out.append({"task_id": row["task_id"], "target": target.strip(), "kind": ctx.kind,
                    "spans": [[s.text, s.confidence] for s in cand.spans], "ctx": _ctx_fields(ctx)})
        if i % 20 == 0:
            print(f"{i} holes, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    print(f"decoded {len(out)} holes in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return out


def _ctx_fields(ctx) -> dict:
    return {k: getattr(ctx, k) for k in ("language", "kind", "start", "end", "prefix", "suffix", "extra", "length",
                                         "line_prefix", "line_suffix", "indent", "indent_unit", "replaced")}


def shown_line(hole: dict, gate):
    """First line the user would see for this hole under `gate` (the server's stage 4), or None."""
    from coda_lsp import pipeline  # noqa: PLC0415
    from coda_lsp.context import CompletionContext  # noqa: PLC0415
    from coda_lsp.gate import Candidate  # noqa: PLC0415

    items = pipeline.postprocess([Candidate.of(hole["spans"])], CompletionContext(**hole["ctx"]), gate)
    first = next((l.strip() for l in items[0].split("\n") if l.strip()), "") if items else ""
    return first or None


def score(holes: list[dict], gate, cost: float) -> dict:
    shown = exact = prefix = 0
    sim = value = 0.0
    for h in holes:
        line = shown_line(h, gate)
        if line is None:
            continue
        want = " ".join(h["target"].split())
        got = " ".join(line.split())
        shown += 1
        exact += got == want
        ok = want.startswith(got)
        prefix += ok
        sim += difflib.SequenceMatcher(None, got, want).ratio()
        value += len(got) if ok else -cost
    n = len(holes)
    return {"min_confidence": gate.min_confidence, "min_shown_confidence": gate.min_shown_confidence, "score": gate.score,
            "coverage": shown / n, "shown": shown, "exact": exact / max(1, shown), "prefix_ok": prefix / max(1, shown),
            "edit_similarity": sim / max(1, shown), "value_per_shown": value / max(1, shown), "value_per_request": value / n}


def grid(holes: list[dict], cost: float) -> list[dict]:
    from coda_lsp.gate import GateConfig  # noqa: PLC0415
    rows = []
    for how in ("mean", "min"):
        for mc in GRID:
            for ms in GRID:
                rows.append(score(holes, GateConfig(mc, ms, how), cost))
    return rows


def plot(rows: list[dict], best: dict, out: Path) -> None:
    """Precision and value vs coverage along the two sweeps: the cut (minConfidence) and the hide
    threshold (minShownConfidence, mean and min first-line score)."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    sweeps = {"minConfidence (cut), minShown 0": [r for r in rows if r["score"] == "mean"
                                                   and r["min_shown_confidence"] == 0.0],
              "minShownConfidence (mean), no cut": [r for r in rows if r["score"] == "mean"
                                                    and r["min_confidence"] == 0.0],
              "minShownConfidence (min), no cut": [r for r in rows if r["score"] == "min"
                                                   and r["min_confidence"] == 0.0]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (label, rs), color in zip(sweeps.items(), ("C0", "C1", "C2")):
        rs = sorted((r for r in rs if r["shown"]), key=lambda r: r["coverage"])
        cov = [r["coverage"] for r in rs]
        axes[0].plot(cov, [r["prefix_ok"] for r in rs], "-", color=color, marker="o", ms=3, label=f"correct prefix, {label}")
        axes[0].plot(cov, [r["edit_similarity"] for r in rs], "--", color=color, marker="s", ms=3, label=f"edit sim, {label}")
        axes[0].plot(cov, [r["exact"] for r in rs], ":", color=color, marker="x", ms=3, label=f"exact, {label}")
        axes[1].plot(cov, [r["value_per_request"] for r in rs], "-", color=color, marker="o", ms=3, label=label)
    for ax in axes:
        ax.axvline(best["coverage"], color="grey", lw=0.8)
        ax.set_xlabel("coverage (share of requests that show a suggestion)")
    axes[0].set_ylabel("precision of the shown first line")
    axes[1].set_ylabel("net accepted chars per request (wrong = -cost)")
    axes[0].set_title("default model, held-out lines")
    axes[1].set_title(f"chosen: minConfidence {best['min_confidence']}, minShownConfidence {best['min_shown_confidence']}")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def markdown_table(rows: list[dict], best: dict) -> str:
    """The two sweeps through the chosen setting (minShownConfidence, then minConfidence), as markdown."""
    head = ("| minConfidence | minShownConfidence | coverage | exact | correct prefix | edit sim | "
            "net chars / shown | net chars / request |\n|---|---|---|---|---|---|---|---|")
    pick = [r for r in rows if r["score"] == best["score"] and r["min_confidence"] == best["min_confidence"]]
    pick += [r for r in rows if r["score"] == best["score"] and r["min_shown_confidence"] == best["min_shown_confidence"]
             and r["min_confidence"] != best["min_confidence"]]
    out = [head]
    for r in sorted(pick, key=lambda r: (r["min_confidence"], r["min_shown_confidence"])):
        same = all(r[k] == best[k] for k in ("score", "min_confidence", "min_shown_confidence"))
        mark = "**" if same else ""
        out.append(f"| {mark}{r['min_confidence']}{mark} | {mark}{r['min_shown_confidence']}{mark} | {r['coverage']:.1%} | "
                   f"{r['exact']:.1%} | {r['prefix_ok']:.1%} | {r['edit_similarity']:.3f} | "
                   f"{r['value_per_shown']:.2f} | {r['value_per_request']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--data", default=str(REPO / "data" / "default_model"), help="build_data.py output (heldout.jsonl)")
    ap.add_argument("--limit", type=int, default=400, help="at most this many held-out files (one hole each)")
    ap.add_argument("--cost", type=float, default=8.0, help="characters a wrong shown suggestion costs")
    ap.add_argument("--holes", type=Path, help="reuse decoded holes saved by an earlier run (skips the model)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gate_calibration.json")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "suggestions_gate.png")
    ap.add_argument("--examples", type=int, default=12, help="first N holes shown with the gate off and on")
    args = ap.parse_args(argv)
    if args.holes:
        holes = json.loads(args.holes.read_text())["holes"]
    else:
        holes = decode_holes(args.model, Path(args.data), args.limit)
    rows = grid(holes, args.cost)
    best = max(rows, key=lambda r: (round(r["value_per_request"], 6), r["coverage"]))
    off = next(r for r in rows if r["min_confidence"] == 0 and r["min_shown_confidence"] == 0)
    from coda_lsp.gate import GateConfig  # noqa: PLC0415
    on = GateConfig(best["min_confidence"], best["min_shown_confidence"], best["score"])
    examples = [{"task_id": h["task_id"], "target": h["target"], "off": shown_line(h, GateConfig()),
                 "on": shown_line(h, on)}
                for h in holes[: args.examples]]
    sensitivity = {}
    for cost in (0.0, 4.0, 8.0, 16.0, 32.0):
        rs = grid(holes, cost) if cost != args.cost else rows
        b = max(rs, key=lambda r: (round(r["value_per_request"], 6), r["coverage"]))
        sensitivity[str(cost)] = {k: b[k] for k in ("score", "min_confidence", "min_shown_confidence", "coverage",
                                                    "prefix_ok", "value_per_request")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": len(holes), "cost": args.cost, "best": best, "off": off,
                                    "sensitivity": sensitivity, "examples": examples, "grid": rows,
                                    "holes": holes}, indent=1))
    if args.plot:
        plot(rows, best, args.plot)
    print(json.dumps({"n": len(holes), "best": best, "off": off, "sensitivity": sensitivity}, indent=1))
    print(markdown_table(rows, best))
    for e in examples:
        print(f"{e['task_id']}\n  target: {e['target']!r}\n  off:    {e['off']!r}\n  on:     {e['on']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
