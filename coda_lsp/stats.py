"""Local acceptance statistics: what was shown, what the user kept. Never sent anywhere.

Each suggestion the server shows gets an id, each of its items (candidates to cycle through) the id
"<suggestion>.<k>" (`StatsRecorder.show`). When it ends, one JSON line is appended to `stats.jsonl`
under the platform's user state directory (platformdirs):

    {"t": 1733240000.0, "id": "...", "outcome": "accepted" | "partial" | "dismissed" | "rejected", "chars": 23,
     "accepted_chars": 23, "candidates": 1, "latency_ms": 41.0, "model": "default_model",
     "settings": "minConfidence=0.3 ..."}

An outcome is `accepted` when the editor ran the item's `coda.accepted` command with no `chars`
(the whole item), `partial` when it reported fewer characters (accept word / line), and `dismissed`
when the next suggestion for the document came (or the server stopped) without either. No code text
is stored unless the `stats` setting is "code". The file is rotated at `MAX_BYTES` (one old file kept).
A corrupt or unwritable file costs one log line and never breaks completion. Next edits
(`coda/nextEdit`) are recorded the same way with `"kind": "next_edit"`; their dismiss key reports
`rejected`, and one left unanswered until the next one is `dismissed`.

`coda-lsp stats [--since DAYS] [--plot FILE.png]` prints accept rate, accepted characters per
suggestion shown and p50/p95 latency per model and setting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger(__name__)

STATS_MODES = ("on", "off", "code")
MAX_BYTES = 1_000_000
MAX_PENDING = 256


def default_path() -> Path:
    import platformdirs
    return Path(platformdirs.user_state_dir("coda-lsp", appauthor=False)) / "stats.jsonl"


@dataclass
class Pending:
    """One suggestion shown: the items of one result (the user cycles among them), until it ends."""
    uri: str
    items: list[str]            # kept in memory only; written only when the `stats` setting is "code"
    latency_ms: float
    model: str
    settings: str
    keep_text: bool
    chosen: int = 0             # the item the user accepted (from) last
    accepted_chars: int = 0
    kind: str = "inline"        # "inline" | "next_edit" (coda/nextEdit)
    rejected: bool = False      # the user dismissed it explicitly (next edits' dismiss key)


@dataclass
class StatsLog:
    """The append-only JSONL file (rotated by size). Writes never raise."""
    path: Path = field(default_factory=default_path)
    max_bytes: int = MAX_BYTES
    broken: bool = False

    def append(self, row: dict) -> None:
        if self.broken:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.broken = True   # one line, then silence: statistics never cost a completion
            log.warning("acceptance statistics off for this session: cannot write %s (%s)", self.path, exc)

    def read(self) -> list[dict]:
        """Every record of the rotated and current files; corrupt lines skipped with one log line."""
        rows, bad = [], 0
        for p in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    row = json.loads(line)
                    if isinstance(row, dict) and isinstance(row.get("outcome"), str):
                        rows.append(row)
                        continue
                except ValueError:
                    pass
                bad += line.strip() != ""
        if bad:
            log.warning("skipped %d corrupt line(s) in %s", bad, self.path)
        return rows


@dataclass
class StatsRecorder:
    """Ids for shown suggestions and one outcome each; `mode` is the `stats` setting.

    The items of one result are one suggestion (the user cycles among them): item k of suggestion g
    has the id "g.k", and an accept of any of them is the suggestion's outcome."""
    log_file: StatsLog = field(default_factory=StatsLog)
    mode: str = "on"
    pending: "OrderedDict[str, Pending]" = field(default_factory=OrderedDict)

    def show(self, uri: str, items: list[str], *, latency_ms: float, model: str, settings: str,
             type_through: bool = False, kind: str = "inline") -> list[str]:
        """Ids for the items of a result; the suggestion shown before at `uri` is replaced (typed over /
        dismissed), and the ones before it end.

        A type-through result (the user typed, or partly accepted, what was shown) continues the
        suggestion whose item it is the rest of. The replaced suggestion stays open until the next
        result or an accept of the new one: an accept the editor began while this result was on its
        way reports against what it showed, and still counts for it (one suggestion, not two)."""
        if type_through:
            ids = [self._continued(uri, item) for item in items]
            if all(ids):
                return ids
        self._end_replaced(uri)
        group = uuid.uuid4().hex[:16]
        ids = [f"{group}.{k}" for k in range(len(items))]
        if self.mode != "off" and items:
            self.pending[group] = Pending(uri, list(items), round(latency_ms, 1), model, settings, self.mode == "code",
                                          kind=kind)
            while len(self.pending) > MAX_PENDING:
                self._end(next(iter(self.pending)))
        return ids

    def _continued(self, uri: str, rest: str) -> Optional[str]:
        for group, p in reversed(self.pending.items()):
            if p.uri == uri:
                for k, item in enumerate(p.items):
                    if item.endswith(rest) and len(item) > len(rest):
                        return f"{group}.{k}"
                return None
        return None

    def _end_replaced(self, uri: str, keep: Optional[str] = None) -> None:
        """End the groups of `uri` but its newest (or but `keep`): that one becomes the replaced one."""
        groups = [g for g, p in self.pending.items() if p.uri == uri]
        for group in (groups[:-1] if keep is None else [g for g in groups if g != keep]):
            self._end(group)

    def accepted(self, sid: str, chars: Optional[int] = None) -> bool:
        """The editor accepted `chars` characters of item `sid` (None: all of it); False for an unknown id."""
        group, _, k = sid.partition(".")
        p = self.pending.get(group)
        if p is None or not k.isdigit() or int(k) >= len(p.items):
            return False
        if group == next(reversed([g for g, q in self.pending.items() if q.uri == p.uri])):
            self._end_replaced(p.uri, keep=group)   # the newest was taken: the one it replaced is decided
        if int(k) != p.chosen:
            p.chosen, p.accepted_chars = int(k), 0
        total = len(p.items[p.chosen])
        p.accepted_chars = total if chars is None else min(total, p.accepted_chars + max(0, int(chars)))
        if p.accepted_chars >= total:
            self._end(group)
        return True

    def rejected(self, sid: str) -> bool:
        """The user dismissed suggestion `sid` explicitly (a next edit's dismiss key); False for an unknown id."""
        group = sid.partition(".")[0]
        p = self.pending.get(group)
        if p is None:
            return False
        p.rejected = True
        self._end(group)
        return True

    def end_uri(self, uri: str) -> None:
        for group in [g for g, p in self.pending.items() if p.uri == uri]:
            self._end(group)

    def close(self) -> None:
        for group in list(self.pending):
            self._end(group)

    def _end(self, group: str) -> None:
        p = self.pending.pop(group)
        chars = len(p.items[p.chosen])
        outcome = "accepted" if p.accepted_chars >= chars else "partial" if p.accepted_chars else \
            "rejected" if p.rejected else "dismissed"
        row = {"t": round(time.time(), 3), "id": group, "outcome": outcome, "chars": chars,
               "accepted_chars": p.accepted_chars, "candidates": len(p.items), "latency_ms": p.latency_ms,
               "model": p.model, "settings": p.settings}
        if p.kind != "inline":
            row["kind"] = p.kind
        if p.keep_text:
            row["text"] = p.items[p.chosen]
        self.log_file.append(row)


# ---------------------------------------------------------------------------------------- summary
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarize(rows: Iterable[dict]) -> list[dict]:
    """One row per (model, settings): shown, accept rate, partial rate, accepted chars per shown, latency."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(str(r.get("model", "?")), str(r.get("settings", "")))].append(r)
    out = []
    for (model, settings), rs in sorted(groups.items()):
        n = len(rs)
        lat = [float(r["latency_ms"]) for r in rs if isinstance(r.get("latency_ms"), (int, float))]
        out.append({"model": model, "settings": settings, "shown": n,
                    "accept_rate": sum(r["outcome"] == "accepted" for r in rs) / n,
                    "partial_rate": sum(r["outcome"] == "partial" for r in rs) / n,
                    "accepted_chars_per_shown": sum(int(r.get("accepted_chars", 0)) for r in rs) / n,
                    "p50_ms": percentile(lat, 0.5), "p95_ms": percentile(lat, 0.95)})
    return out


def format_table(summary: list[dict]) -> str:
    head = f"{'model':<16} {'shown':>6} {'accept':>7} {'partial':>8} {'chars/shown':>12} {'p50 ms':>8} {'p95 ms':>8}  settings"
    lines = [head]
    for s in summary:
        lines.append(f"{s['model'][:16]:<16} {s['shown']:>6} {s['accept_rate']:>7.1%} {s['partial_rate']:>8.1%} "
                     f"{s['accepted_chars_per_shown']:>12.2f} {s['p50_ms']:>8.0f} {s['p95_ms']:>8.0f}  {s['settings']}")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    """Accept rate per day, one line per (model, settings)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    key = lambda r: (str(r.get("model", "?")), str(r.get("settings", "")))  # noqa: E731
    for (model, settings), rs in itertools.groupby(sorted(rows, key=key), key=key):
        by_day: dict[int, list[bool]] = defaultdict(list)
        for r in rs:
            by_day[int(float(r.get("t", 0)) // 86400)].append(r["outcome"] == "accepted")
        days = sorted(by_day)
        ax.plot([time.strftime("%m-%d", time.gmtime(d * 86400)) for d in days],
                [sum(by_day[d]) / len(by_day[d]) for d in days], marker="o", label=f"{model} {settings}"[:60])
    ax.set_ylabel("accept rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(name: str, argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog=f"coda-lsp {name}", description="Local acceptance statistics of coda-lsp "
                                 "suggestions (nothing leaves this machine).")
    ap.add_argument("--since", type=float, metavar="DAYS", help="only the last DAYS days")
    ap.add_argument("--plot", metavar="FILE.png", help="also plot the accept rate per day")
    ap.add_argument("--file", metavar="PATH", help=f"statistics file (default {default_path()})")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="coda-lsp stats: %(message)s")
    stats = StatsLog(Path(args.file) if args.file else default_path())
    rows = stats.read()
    if args.since is not None:
        cutoff = time.time() - args.since * 86400
        rows = [r for r in rows if isinstance(r.get("t"), (int, float)) and r["t"] >= cutoff]
    if not rows:
        print(f"no suggestions recorded in {stats.path}" + (f" in the last {args.since:g} days" if args.since else ""))
        return 0
    print(format_table(summarize(rows)))
    if args.plot:
        try:
            plot(rows, Path(args.plot))
        except ImportError:
            print("coda-lsp stats: --plot needs matplotlib (pip install coda-lsp[train])", file=sys.stderr)
            return 2
        print(f"plot written to {args.plot}")
    return 0
