"""`coda-bench gate`: choose the confidence gate's defaults (minConfidence, minShownConfidence) on real
held-out lines.

Why a benchmark (it was a recipe of the default model): it runs the language server's own stages, so
it imports `coda_lsp`, which `coda_train` and its recipes may not. The holes are the ones `compare.py
--task heldout-line` uses (`coda_train.eval.heldout`): the default model's held-out split
(`data/default_model/heldout.jsonl` from build_data.py). `--files` takes a second set of another kind
(any Python files or folders, one hole each, cut the same way): the defaults must hold on both.

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
`--min-chars` adds a third axis: a shown first line shorter than this is not shown.

Usage (CPU, a few minutes):
    coda-bench gate --data data/default_model --out benchmarks/results/gate_calibration.json \\
        --plot docs/suggestions_gate.png
    coda-bench gate --files train benchmarks --limit 60 --out benchmarks/results/gate_research.json --plot ""
    coda-bench gate --holes benchmarks/results/gate_calibration.json --also benchmarks/results/gate_research.json
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import json
import sys
import time
from pathlib import Path

from coda_lsp import pipeline
from coda_lsp.context import CompletionContext
from coda_lsp.documents import Document
from coda_lsp.gate import Candidate, GateConfig
from coda_lsp.loading import load_engine
from coda_lsp.options import ServerOptions
from coda_train.eval.heldout import heldout_line_holes, line_hole

REPO = Path(__file__).resolve().parents[1]
GRID = [round(0.1 * i, 1) for i in range(10)]   # 0.0 = off
MIN_CHARS = (0, 2, 3, 4, 6, 8)                   # shortest first line worth showing (0 = any)


def file_holes(paths: list[Path], limit: int) -> list[dict]:
    """One hole per Python file under `paths` (files in sorted order, none picked), as heldout_line_holes."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    rows = []
    for f in files:
        hole = line_hole(str(f), f.read_text(encoding="utf-8", errors="replace"))
        if hole is not None:
            rows.append(hole)
        if len(rows) >= limit:
            break
    return rows


def infill_holes(path: Path, limit: int) -> list[dict]:
    """HumanEval-infilling holes: one per problem (its middle line hole, as heldout_line_holes takes the
    middle of a file), so the eval data's prompts count once each."""
    by_problem: dict[str, list[dict]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["canonical_solution"].strip():
                by_problem.setdefault(r["task_id"].rsplit("/", 1)[0], []).append(r)
    rows = [rs[len(rs) // 2] for rs in by_problem.values()][:limit]
    return [{k: r[k] for k in ("task_id", "prompt", "suffix", "canonical_solution")} for r in rows]


def decode_holes(model: str | None, rows: list[dict]) -> list[dict]:
    """Run the server's path once per held-out line; keep the pieces with their confidences."""
    opts = ServerOptions(model_path=model)
    lm = load_engine(opts)
    out, t0 = [], time.perf_counter()
    for i, row in enumerate(rows):
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

    items = pipeline.postprocess([Candidate.of(hole["spans"])], CompletionContext(**hole["ctx"]), gate)
    first = next((l.strip() for l in items[0].split("\n") if l.strip()), "") if items else ""
    return first or None


def score(holes: list[dict], gate, cost: float, min_chars: int = 0) -> dict:
    shown = exact = prefix = 0
    sim = value = 0.0
    for h in holes:
        line = shown_line(h, gate)
        if line is None or len(line) < min_chars:
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
            "min_chars": min_chars, "coverage": shown / n, "shown": shown, "exact": exact / max(1, shown), "prefix_ok": prefix / max(1, shown),
            "edit_similarity": sim / max(1, shown), "value_per_shown": value / max(1, shown), "value_per_request": value / n}


def grid(holes: list[dict], cost: float) -> list[dict]:
    rows = []
    for how in ("mean", "min"):
        for mc in GRID:
            for ms in GRID:
                for chars in MIN_CHARS:
                    rows.append(score(holes, GateConfig(mc, ms, how), cost, chars))
    return rows


KEY = ("score", "min_confidence", "min_shown_confidence", "min_chars")


def pick(sets: list[list[dict]]) -> dict:
    """The setting to use, as a row of the first set: the best net chars per request where no set goes
    below 0 (the sum over sets, then coverage, decides); with one set simply its best."""
    others = [{tuple(r[k] for k in KEY): r for r in rows} for rows in sets[1:]]

    def rank(r: dict):
        vals = [r["value_per_request"]] + [o[tuple(r[k] for k in KEY)]["value_per_request"] for o in others]
        # fewer gate knobs first at a tie: no length floor, then the lower thresholds
        return (min(vals) >= 0, round(sum(vals), 6), r["coverage"], -r["min_chars"], -r["min_shown_confidence"])
    return max(sets[0], key=rank)


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
    """The sweeps through the chosen setting (minShownConfidence, minConfidence, min chars), as markdown."""
    head = ("| minConfidence | minShownConfidence | min chars | coverage | exact | correct prefix | edit sim | "
            "net chars / shown | net chars / request |\n|---|---|---|---|---|---|---|---|---|")
    same = [r for r in rows if r["score"] == best["score"]]
    at = lambda r, *ks: all(r[k] == best[k] for k in ks)  # noqa: E731
    pick = [r for r in same if at(r, "min_confidence", "min_chars")]
    pick += [r for r in same if at(r, "min_shown_confidence", "min_chars") and not at(r, "min_confidence")]
    pick += [r for r in same if at(r, "min_shown_confidence", "min_confidence") and not at(r, "min_chars")]
    out = [head]
    for r in sorted(pick, key=lambda r: (r["min_confidence"], r["min_shown_confidence"], r["min_chars"])):
        mark = "**" if at(r, *KEY) else ""
        out.append(f"| {mark}{r['min_confidence']}{mark} | {mark}{r['min_shown_confidence']}{mark} | "
                   f"{mark}{r['min_chars']}{mark} | {r['coverage']:.1%} ({r['shown']}) | "
                   f"{r['exact']:.1%} | {r['prefix_ok']:.1%} | {r['edit_similarity']:.3f} | "
                   f"{r['value_per_shown']:.2f} | {r['value_per_request']:.2f} |")
    return "\n".join(out)


def row_at(rows: list[dict], setting: dict) -> dict:
    return next(r for r in rows if all(r[k] == setting[k] for k in KEY))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--data", default=str(REPO / "data" / "default_model"), help="build_data.py output (heldout.jsonl)")
    ap.add_argument("--files", type=Path, nargs="+", help="Python files / folders to cut holes from instead of --data")
    ap.add_argument("--infill", type=Path, help="a HumanEval-infilling .jsonl.gz whose holes to use instead of --data")
    ap.add_argument("--limit", type=int, default=400, help="at most this many held-out files (one hole each)")
    ap.add_argument("--cost", type=float, default=8.0, help="characters a wrong shown suggestion costs")
    ap.add_argument("--holes", type=Path, help="reuse decoded holes saved by an earlier run (skips the model)")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="results of other held-out sets (their saved holes): the choice keeps every set >= 0")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gate_calibration.json")
    ap.add_argument("--plot", type=str, default=str(REPO / "docs" / "suggestions_gate.png"), help='"" = no plot')
    ap.add_argument("--examples", type=int, default=12, help="first N holes shown with the gate off and on")
    args = ap.parse_args(argv)
    if args.holes:
        holes = json.loads(args.holes.read_text())["holes"]
    else:
        rows_in = (file_holes(args.files, args.limit) if args.files else
                   infill_holes(args.infill, args.limit) if args.infill else heldout_line_holes(Path(args.data), args.limit))
        holes = decode_holes(args.model, rows_in)
    rows = grid(holes, args.cost)
    also = {str(p): grid(json.loads(p.read_text())["holes"], args.cost) for p in args.also}
    best = pick([rows, *also.values()])
    default = ServerOptions()
    defaults = {"score": default.gate.score, "min_confidence": default.min_confidence,
                "min_shown_confidence": default.min_shown_confidence, "min_chars": 0}
    off = next(r for r in rows if r["min_confidence"] == 0 and r["min_shown_confidence"] == 0 and r["min_chars"] == 0)
    on = GateConfig(best["min_confidence"], best["min_shown_confidence"], best["score"])
    examples = [{"task_id": h["task_id"], "target": h["target"], "off": shown_line(h, GateConfig()),
                 "on": shown_line(h, on)}
                for h in holes[: args.examples]]
    sensitivity = {}
    for cost in (0.0, 4.0, 8.0, 16.0, 32.0):
        rs = grid(holes, cost) if cost != args.cost else rows
        b = pick([rs] + ([grid(json.loads(p.read_text())["holes"], cost) for p in args.also] if cost != args.cost
                         else list(also.values())))
        sensitivity[str(cost)] = {k: b[k] for k in (*KEY, "coverage", "prefix_ok", "value_per_request")}
    summary = {"n": len(holes), "cost": args.cost, "best": best, "off": off, "defaults": row_at(rows, defaults),
               "also": {p: {"n": len(json.loads(Path(p).read_text())["holes"]), "best": row_at(rs, best),
                            "defaults": row_at(rs, defaults)} for p, rs in also.items()},
               "sensitivity": sensitivity}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = {"holes_from": str(args.holes)} if args.holes else {"holes": holes}   # decoded holes are kept once
    args.out.write_text(json.dumps({**summary, "examples": examples, "grid": rows, **saved}, indent=1))
    if args.plot:
        plot([r for r in rows if r["min_chars"] == 0], best, Path(args.plot))
    print(json.dumps(summary, indent=1))
    print(markdown_table(rows, best))
    for p, rs in also.items():
        print(f"\n{p}:\n{markdown_table(rs, best)}")
    for e in examples:
        print(f"{e['task_id']}\n  target: {e['target']!r}\n  off:    {e['off']!r}\n  on:     {e['on']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
