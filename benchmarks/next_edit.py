"""`coda-bench next-edit`: are the next edits right, and what do they cost, against regenerating the window?

Cases (benchmarks/next_edit_cases.py) come from the default model's held-out code: renames at the
definition, a parameter added to a signature, and no-op controls (a comment or string word changed).
Per case, a real LSP client (raw JSON-RPC over stdio, `coda_bench.lsp_client`) opens the file, sends
the user's edit as a didChange and asks `coda/nextEdit` at the cursor (bar 0, so the answer carries
every proposal with its confidence and the bar is swept offline); then it asks for an inline
completion at the same place in the same document (the latency reference). In this process:
- baseline: the whole window regenerated with `fill` (`coda_lsp.pipeline.run_once` over the window's
  range), diffed word by word against the window; its edits outside the user's edit are its proposals;
- breakdown: the same job the server runs (`NextEditJob`), to see where each expected edit was lost:
  not scored as a suspect (location), re-masked but decoded to other text (content), or below the bar;
  and an oracle that re-masks exactly the expected spans: what the model writes when told where.

Precision: proposed edits equal to an expected edit exactly (range and text); recall: expected edits
proposed; false-suggestion rate: control cases with any proposal. Latency: p50/p95 of the request
through the server, and its p50 over the inline completion's.

Usage (CPU, a few minutes): coda-bench next-edit [--model DIR] [--renames 20] [--signatures 10]
    [--controls 12] [--out benchmarks/results/next_edit_default_model.json]
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from coda_bench.lsp_client import LspClient
from coda_bench.next_edit_cases import Case, build_cases

RESULTS = Path(__file__).resolve().parent / "results"
BARS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
SETTINGS = {"nextEditMinConfidence": 0, "nextEditDebounceMs": 0, "debounceMs": 0, "speculate": False,
            "streaming": False}
_TOKENS = re.compile(r"\w+|\s+|[^\w\s]")


def _utf16_pos(text: str, offset: int) -> dict:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return {"line": line, "character": len(text[offset - col:offset].encode("utf-16-le")) // 2}


def _offset(text: str, pos: dict) -> int:
    lines = text.split("\n")
    base = sum(len(x) + 1 for x in lines[:pos["line"]])
    line = lines[pos["line"]] if pos["line"] < len(lines) else ""
    units, i = 0, 0
    while i < len(line) and units < pos["character"]:
        units += len(line[i].encode("utf-16-le")) // 2
        i += 1
    return base + i


def score(proposed: list[tuple[int, int, str]], expected: list[tuple[int, int, str]]) -> tuple[int, int]:
    """(proposals equal to an expected edit, expected edits proposed)."""
    exp = set(expected)
    hits = sum(p in exp for p in proposed)
    return hits, len(exp & set(proposed))


def fill_edits(text: str, w0: int, w1: int, new: str, protect: tuple[int, int]) -> list[tuple[int, int, str]]:
    """The word-level diff of the window's old and regenerated text, minus what overlaps the user's edit."""
    from coda_lsp.next_edit import minimal_edit
    old_t, new_t = _TOKENS.findall(text[w0:w1]), _TOKENS.findall(new)
    starts = [w0]
    for t in old_t:
        starts.append(starts[-1] + len(t))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old_t, new_t, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        a, b = starts[i1], starts[i2]
        if a < protect[1] and b > protect[0] or (a == b and protect[0] <= a <= protect[1]):
            continue
        s, e, t = minimal_edit(text[a:b], "".join(new_t[j1:j2]), a)
        if (s, e, t) != (s, s, ""):
            out.append((s, e, t))
    return out


def summarize(rows: list[dict], key: str, bar: Optional[float]) -> dict:
    """Per kind and in total: precision, recall, false-suggestion rate, for proposals at or above `bar`."""
    out = {}
    for kind in ("rename", "signature", "comment", "string", "edits", "controls"):
        rs = [r for r in rows if r["kind"] == kind or (kind == "edits" and r["kind"] in ("rename", "signature"))
              or (kind == "controls" and r["kind"] in ("comment", "string"))]
        if not rs:
            continue
        props = [[tuple(p[:3]) for p in r[key] if bar is None or p[3] >= bar] for r in rs]
        n_prop = sum(len(p) for p in props)
        hits = sum(score(p, [tuple(e) for e in r["expected"]])[0] for p, r in zip(props, rs))
        found = sum(score(p, [tuple(e) for e in r["expected"]])[1] for p, r in zip(props, rs))
        n_exp = sum(len(r["expected"]) for r in rs)
        out[kind] = {"cases": len(rs), "proposed": n_prop, "correct": hits,
                     "precision": hits / n_prop if n_prop else None,
                     "recall": found / n_exp if n_exp else None,
                     "cases_with_a_suggestion": sum(bool(p) for p in props) / len(rs)}
    return out


def breakdown(lm, case: Case, lines: int, context_tokens: int, bar: float) -> dict:
    """Where each expected edit went in the server's own job, and what the oracle-located decode writes."""
    from coda_model.edit_config import EditConfig
    from coda_model.next_edit import denoise_spans
    from coda_lsp.documents import Document
    from coda_lsp.next_edit import NEXT_EDIT_CONTEXT_TOKENS, EditTracker, NextEditJob, edit_window, minimal_edit

    edited = case.edited
    tracker = EditTracker()
    tracker.note("u", case.text, edited)
    doc = Document("file:///b.py", edited, 2, "python")
    budget = min(context_tokens, NEXT_EDIT_CONTEXT_TOKENS)
    win = edit_window(doc, case.cursor, lines, tracker.region("u"), 4 * budget)
    cfg = EditConfig(min_confidence=0.0)
    job = NextEditJob(lm, win, cfg, budget)
    while not job.done:
        job.step()
    pieces, starts = job.pieces()
    w = win.window_start
    tok_at = lambda off: next((k for k in range(len(pieces)) if starts[k] <= off - w < starts[k + 1]), None)  # noqa: E731
    suspects = [(a - job.w0, b - job.w0) for a, b, _ in job.found.suspects]
    proposed = {(doc.offset_at(e.start), doc.offset_at(e.end), e.text): e.confidence for e in job.edits(doc)}
    probs, best = job.found.token_probs, job.found.token_best
    out = {"located": 0, "decoded_right": 0, "above_bar": 0, "oracle_right": 0, "expected": len(case.expected),
           "expected_token_p": [], "window_token_p_median": statistics.median(probs) if probs else None}
    spans, expected_tokens = [], set()
    for s, e, t in case.expected:
        k = tok_at(s if e > s else max(w, s - 1))
        if k is None:
            continue
        k_end = max(k + 1, (tok_at(e - 1) or k) + 1)
        out["expected_token_p"].append(min(probs[k:k_end]))
        expected_tokens.update(range(k, k_end))
        if any(a < k_end and b > k for a, b in suspects):
            out["located"] += 1
        if (s, e, t) in proposed:
            out["decoded_right"] += 1
            out["above_bar"] += proposed[(s, e, t)] >= bar
        spans.append((job.w0 + k, job.w0 + k_end, s, e, t))
    # how well the scores rank the expected tokens first, among the window's other non-blank tokens
    p0, p1 = job.protect[0] - job.w0, job.protect[1] - job.w0
    scored = [(k, probs[k], probs[k] / max(best[k], 1e-12)) for k in range(len(probs))
              if pieces[k].strip() and not p0 <= k < p1]
    out["scores"] = {"p": [[s[1], s[0] in expected_tokens] for s in scored],
                     "ratio": [[s[2], s[0] in expected_tokens] for s in scored]}
    if spans:   # oracle: re-mask exactly the expected edits' tokens, same decode
        decoded, _ = denoise_spans(lm.engine, job.ids, [(a, b) for a, b, *_ in spans], cfg)
        tok = lm.tokenizer
        for (a, b, s, e, t), (new, _conf) in zip(spans, decoded):
            old = edited[w + starts[a - job.w0]:w + starts[b - job.w0]]
            out["oracle_right"] += minimal_edit(old, tok.decode(new), w + starts[a - job.w0]) == (s, e, t)
    return out


async def run(model: Optional[str], cases: list[Case], lines: int, bar: float) -> dict:
    from coda_lsp.documents import Document
    from coda_lsp.loading import load_engine
    from coda_lsp.next_edit import NEXT_EDIT_CONTEXT_TOKENS, EditTracker, edit_window
    from coda_lsp.options import ServerOptions, merge_options
    from coda_lsp.pipeline import run_once

    options, _ = merge_options(ServerOptions(model_path=model), SETTINGS)
    lm = load_engine(options)
    fill_opts, _ = merge_options(options, {"maxTokens": 256, "minConfidence": 0})
    argv = [sys.executable, "-m", "coda_lsp.cli", "--stdio"] + (["--model", model] if model else [])
    err = tempfile.NamedTemporaryFile(prefix="coda-next-edit-", suffix=".log", delete=False).name
    client = await LspClient.start(argv, err)
    init = {"processId": None, "rootUri": None, "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {**SETTINGS, "nextEditLines": lines, **({"modelPath": model} if model else {})}}
    await client.call("initialize", init)
    client.notify("initialized", {})
    for _ in range(600):
        if any(s.get("state") == "ready" for s in client.statuses):
            break
        await asyncio.sleep(0.1)
    rows = []
    try:
        for i, case in enumerate(cases):
            uri = f"file:///next-edit/{i}_{case.source}"
            edited = case.edited
            client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                    "text": case.text}})
            a, b, t = case.edit
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
                {"range": {"start": _utf16_pos(case.text, a), "end": _utf16_pos(case.text, b)}, "text": t}]})
            pos = _utf16_pos(edited, case.cursor)
            t0 = time.perf_counter()
            answer = await client.call("coda/nextEdit", {"textDocument": {"uri": uri, "version": 2}, "position": pos})
            next_ms = 1e3 * (time.perf_counter() - t0)
            t0 = time.perf_counter()
            await client.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri}, "position": pos,
                                                                "context": {"triggerKind": 2}})
            inline_ms = 1e3 * (time.perf_counter() - t0)
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            proposed = [(_offset(edited, e["range"]["start"]), _offset(edited, e["range"]["end"]), e["text"],
                         e.get("confidence", 1.0)) for e in answer.get("edits", [])]
            # baseline: regenerate the window the server saw, with fill
            doc = Document(uri, edited, 2, "python")
            tracker = EditTracker()
            tracker.note(uri, case.text, edited)
            win = edit_window(doc, case.cursor, lines, tracker.region(uri), 4 * NEXT_EDIT_CONTEXT_TOKENS)
            w0 = win.window_start
            w1 = w0 + len(win.head) + len(win.protected) + len(win.tail)
            protect = (w0 + len(win.head), w0 + len(win.head) + len(win.protected))
            t0 = time.perf_counter()
            _, items = run_once(lm, doc, w0, w1, fill_opts)
            fill_ms = 1e3 * (time.perf_counter() - t0)
            baseline = [(*e, 1.0) for e in fill_edits(edited, w0, w1, items[0] if items else edited[w0:w1], protect)]
            why = breakdown(lm, case, lines, options.context_tokens, bar) if case.expected else None
            rows.append({"kind": case.kind, "source": case.source, "edit": list(case.edit), "cursor": case.cursor,
                         "expected": [list(e) for e in case.expected], "proposed": [list(p) for p in proposed],
                         "baseline": [list(p) for p in baseline], "next_edit_ms": next_ms, "inline_ms": inline_ms,
                         "fill_ms": fill_ms, "breakdown": why})
            shown = [p for p in proposed if p[3] >= bar]
            print(f"{i:3d} {case.kind:<9} {case.source:<22} next {next_ms:6.0f} ms inline {inline_ms:6.0f} ms "
                  f"fill {fill_ms:6.0f} ms | proposed {len(proposed)} (>= bar {len(shown)}) "
                  f"baseline {len(baseline)} expected {len(case.expected)}", file=sys.stderr)
    finally:
        await client.stop()
    return {"rows": rows}


def _auc(pos: list[float], neg: list[float]) -> Optional[float]:
    """P(a positive scores lower than a negative), ties half (neg sorted)."""
    import bisect
    if not pos or not neg:
        return None
    total = sum(len(neg) - bisect.bisect_right(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p))
                for p in pos)
    return total / (len(pos) * len(neg))


def report(rows: list[dict], bar: float) -> dict:
    lat = {}
    for kind in sorted({r["kind"] for r in rows}) + ["all"]:
        rs = [r for r in rows if kind in ("all", r["kind"])]
        ne, il = sorted(r["next_edit_ms"] for r in rs), sorted(r["inline_ms"] for r in rs)
        lat[kind] = {"next_edit_p50_ms": statistics.median(ne), "next_edit_p95_ms": ne[min(len(ne) - 1, int(0.95 * len(ne)))],
                     "inline_p50_ms": statistics.median(il), "fill_p50_ms": statistics.median(r["fill_ms"] for r in rs),
                     "next_edit_over_inline_p50": statistics.median(ne) / max(1e-9, statistics.median(il))}
    bd = [r["breakdown"] for r in rows if r["breakdown"]]
    total = {k: sum(b[k] for b in bd) for k in ("expected", "located", "decoded_right", "above_bar", "oracle_right")}
    exp_p = [p for b in bd for p in b["expected_token_p"]]
    total["expected_token_p_median"] = statistics.median(exp_p) if exp_p else None
    for name in ("p", "ratio"):   # AUC: chance an expected token scores below (more suspect than) another one
        pos = [s for b in bd for s, hit in b["scores"][name] if hit]
        neg = sorted(s for b in bd for s, hit in b["scores"][name] if not hit)
        total[f"location_auc_{name}"] = _auc(pos, neg)
    total["window_token_p_median"] = statistics.median(b["window_token_p_median"] for b in bd) if bd else None
    return {"bar": bar, "at_bar": summarize(rows, "proposed", bar),
            "sweep": {str(b): summarize(rows, "proposed", b) for b in BARS},
            "baseline_fill": summarize(rows, "baseline", None), "latency": lat, "breakdown": total}


def main(argv=None) -> int:
    from coda_lsp.options import ServerOptions
    ap = argparse.ArgumentParser(prog="coda-bench next-edit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    ap.add_argument("--renames", type=int, default=20)
    ap.add_argument("--signatures", type=int, default=10)
    ap.add_argument("--controls", type=int, default=12, help="half comment edits, half string edits")
    ap.add_argument("--lines", type=int, default=ServerOptions().next_edit_lines)
    ap.add_argument("--out", type=Path, default=RESULTS / "next_edit_default_model.json")
    args = ap.parse_args(argv)
    bar = ServerOptions().next_edit_min_confidence
    cases = build_cases({"rename": args.renames, "signature": args.signatures, "comment": args.controls // 2,
                         "string": args.controls - args.controls // 2}, args.lines)
    res = asyncio.run(run(args.model, cases, args.lines, bar))
    res.update(report(res["rows"], bar))
    for r in res["rows"]:   # the per-token scores are summarised as AUCs; kept out of the file
        (r["breakdown"] or {}).pop("scores", None)
    res.update(machine=platform.processor() or platform.machine(), python=platform.python_version(),
               model=args.model or "embedded default model", settings=SETTINGS, lines=args.lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1), encoding="utf-8")
    for name, table in (("next edit @ bar %g" % bar, res["at_bar"]), ("fill baseline", res["baseline_fill"])):
        print(name)
        for kind, m in table.items():
            print(f"  {kind:<10} cases {m['cases']:3d} proposed {m['proposed']:4d} correct {m['correct']:3d} "
                  f"precision {m['precision'] if m['precision'] is None else round(m['precision'], 3)} "
                  f"recall {m['recall'] if m['recall'] is None else round(m['recall'], 3)} "
                  f"with a suggestion {m['cases_with_a_suggestion']:.2f}")
    lat = res["latency"]["all"]
    print(f"latency p50 {lat['next_edit_p50_ms']:.0f} ms p95 {lat['next_edit_p95_ms']:.0f} ms; inline p50 "
          f"{lat['inline_p50_ms']:.0f} ms ({lat['next_edit_over_inline_p50']:.2f}x); breakdown {res['breakdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
