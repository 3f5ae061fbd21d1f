"""Next-edit suggestions: after an edit, the edits elsewhere in the window that it implies. No pygls here.

    tracker.note(uri, old_text, new_text)           # every didChange: where the user's latest edit is
    service.suggest(uri, pos, invoked=False)        # -> NextEditResult (edits against one version) or None

The window is `nextEditLines` lines around the cursor (a third above, the rest below), cut from the
document with the text around it as context within `contextTokens`. The span the user just edited is
protected (never proposed): the tracker's latest edit when it lies in the window, else the word at
the cursor. The engine stage is `coda_model.next_edit` (score every token while masked, re-mask the
ones that no longer fit, denoise); `NextEditJob` runs it on the worker in two steps (scoring, then
the decode) through the same scheduler as completions, so a newer request or keystroke cancels it.
Edits are mapped back to text, trimmed to the characters that change, and dropped when the document
moved on while they were computed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from coda_model.edit_config import EditConfig

from coda_lsp.documents import Document, Pos
from coda_lsp.loading import LoadedEngine

log = logging.getLogger(__name__)
NEXT_EDIT_CONTEXT_TOKENS = 128   # context beside the window (at most contextTokens): the window holds the
                                 # evidence; with 1,024 tokens the scoring cost doubled (coda-bench next-edit)
MAX_LINE_CHARS = 2000          # a window line longer than this (minified, data) is not scored: no edits
_WORD = re.compile(r"[A-Za-z_0-9]+")


# ------------------------------------------------------------------------------------------- where the user edits
@dataclass
class EditTracker:
    """Per document, the character range of the user's latest edit burst in the current text.

    A change that touches the burst extends it (typing a name letter by letter is one edit); any other
    change starts a new one. An accepted next edit arrives as a change too, so it is protected next."""
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def note(self, uri: str, old: str, new: str) -> None:
        a = _common_prefix(old, new)
        tail = _common_prefix(old[::-1], new[::-1], min(len(old), len(new)) - a)
        old_end, new_end = len(old) - tail, len(new) - tail
        if old_end == a and new_end == a:
            return
        delta = new_end - old_end
        prev = self.regions.get(uri)
        if prev is not None and a <= prev[1] and old_end >= prev[0]:
            self.regions[uri] = (min(prev[0], a), max(prev[1] + delta, new_end))
        else:
            self.regions[uri] = (a, new_end)

    def region(self, uri: str) -> Optional[tuple[int, int]]:
        return self.regions.get(uri)

    def drop(self, uri: str) -> None:
        self.regions.pop(uri, None)


def _common_prefix(a: str, b: str, limit: Optional[int] = None) -> int:
    n = min(len(a), len(b)) if limit is None else max(0, limit)
    lo, hi = 0, n
    while lo < hi:   # binary search on slices: C-speed compares, a keystroke in a big file stays cheap
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ------------------------------------------------------------------------------------------- results
@dataclass
class NextEdit:
    start: Pos
    end: Pos
    text: str
    confidence: float
    old: str = ""


@dataclass
class NextEditResult:
    uri: str
    version: int
    edits: list[NextEdit]
    request_id: str = ""
    total_s: float = 0.0
    note: str = ""                     # why there is nothing (for coda/status)
    ids: list[str] = field(default_factory=list)   # stats ids, one per edit


@dataclass(frozen=True)
class EditWindow:
    """What the model sees for one request, as text pieces in document order (offsets are the document's)."""
    before: str
    head: str            # window text before the protected span
    protected: str
    tail: str            # window text after it
    after: str
    window_start: int    # document offset of `head`
    version: int


def edit_window(doc: Document, cursor: int, lines: int, protect: Optional[tuple[int, int]],
                context_chars: int) -> EditWindow | str:
    """The window around the cursor, or a reason there is none (the caller reports it)."""
    text = doc.text
    line = doc.position_at(cursor).line
    first = max(0, line - lines // 3)
    last = min(doc.line_count, first + lines)
    w0 = doc.offset_at(Pos(first, 0))
    w1 = len(text) if last >= doc.line_count else doc.offset_at(Pos(last, 0))
    window = text[w0:w1]
    if not window.strip():
        return "window is blank"
    if any(len(x) > MAX_LINE_CHARS for x in window.split("\n")):
        return f"a line in the window is longer than {MAX_LINE_CHARS} characters"
    if protect is None or not (w0 <= protect[0] and protect[1] <= w1):
        protect = (cursor, cursor)
    # the whole words the edit touches: after "path" -> "p", the new name is the edit, not just the cut
    p0, p1 = max(w0, _word_at(text, protect[0])[0]), min(w1, _word_at(text, protect[1])[1])
    before = text[max(0, w0 - context_chars):w0]
    after = text[w1:w1 + context_chars]
    return EditWindow(before, text[w0:p0], text[p0:p1], text[p1:w1], after, w0, doc.version)


def _word_at(text: str, cursor: int) -> tuple[int, int]:
    a = b = cursor
    while a > 0 and _WORD.match(text[a - 1]):
        a -= 1
    while b < len(text) and _WORD.match(text[b]):
        b += 1
    return a, b


def minimal_edit(old: str, new: str, start: int) -> tuple[int, int, str]:
    """(start, end, text) in document offsets with the unchanged head and tail of old/new trimmed."""
    a = _common_prefix(old, new)
    tail = _common_prefix(old[::-1], new[::-1], min(len(old), len(new)) - a)
    return start + a, start + len(old) - tail, new[a:len(new) - tail]


# ------------------------------------------------------------------------------------------- the job
class NextEditJob:
    """The engine stage on the worker, in two steps (score + pick spans; denoise), like an InfillJob."""

    def __init__(self, lm: LoadedEngine, win: EditWindow, config: EditConfig, context_tokens: int) -> None:
        tok = lm.tokenizer
        self.lm, self.win, self.config = lm, win, config
        before, after = tok.encode(win.before), tok.encode(win.after)
        head, prot, tail = tok.encode(win.head), tok.encode(win.protected), tok.encode(win.tail)
        room = max(0, context_tokens)   # beside the window, split between the two sides
        keep_before = min(len(before), max(room // 2, room - len(after)))
        before, after = before[len(before) - keep_before:], after[:max(0, room - keep_before)]
        self.window_ids = head + prot + tail
        self.ids = before + self.window_ids + after
        self.w0 = len(before)
        self.protect = (self.w0 + len(head), self.w0 + len(head) + len(prot))
        self.plan = None
        self.found = None
        self.done = False
        self.num_steps = 0

    def step(self) -> tuple[str, int, int, int, bool]:
        from coda_model.next_edit import decode_plan, plan_edits
        engine = self.lm.engine
        if self.plan is None:
            self.plan = plan_edits(engine, self.ids, (self.w0, self.w0 + len(self.window_ids)),
                                   protect=self.protect, config=self.config)
            self.done = not self.plan.found.suspects
            if self.done:
                self.found = self.plan.found
        else:
            self.found = decode_plan(engine, self.plan, self.config)
            self.done = True
        self.num_steps += 1
        return "", self.num_steps, 2, 0, self.done

    def edits(self, doc: Document) -> list[NextEdit]:
        """The proposals as edits of `doc` (the version the window was cut from), trimmed to what changes;
        those that cannot be mapped back to text are dropped."""
        if self.found is None:
            return []
        tok = self.lm.tokenizer
        pieces, starts = self.pieces()
        text = self.win.head + self.win.protected + self.win.tail
        out = []
        for e in self.found.proposals:
            a, b = e.start - self.w0, e.end - self.w0
            if not (0 <= a <= b <= len(self.window_ids)):
                continue
            old = text[starts[a]:starts[b]]
            if "".join(pieces[a:b]) != old:
                continue
            new = tok.decode(e.new_ids)
            start = self.win.window_start + starts[a]
            s, t, repl = minimal_edit(old, new, start)
            if s == t and not repl:
                continue
            out.append(NextEdit(doc.position_at(s), doc.position_at(t), repl, e.confidence, old[s - start:t - start]))
        return out


    def pieces(self) -> tuple[list[str], list[int]]:
        """Each window token's text and the window offset where it starts (plus the end), for mapping."""
        tok = self.lm.tokenizer
        pieces = [tok.decode([t]) for t in self.window_ids]
        if "".join(pieces) != self.win.head + self.win.protected + self.win.tail:
            pieces = _pieces_exact(tok, self.window_ids)   # a character split across tokens
        starts = [0]
        for p in pieces:
            starts.append(starts[-1] + len(p))
        return pieces, starts


def _pieces_exact(tok, ids: list[int]) -> list[str]:
    out, prev = [], ""
    for k in range(1, len(ids) + 1):
        cur = tok.decode(ids[:k])
        out.append(cur[len(prev):] if cur.startswith(prev) else "")
        prev = cur if cur.startswith(prev) else prev
    return out


# ------------------------------------------------------------------------------------------- the service
class NextEditService:
    """`coda/nextEdit` on top of the completion service: its documents, model, scheduler and statistics."""

    def __init__(self, completions) -> None:
        self.completions = completions
        self.tracker = EditTracker()
        self.missing_stage_reported = False

    def note_change(self, uri: str, old: str, new: str) -> None:
        self.tracker.note(uri, old, new)

    def drop(self, uri: str) -> None:
        self.tracker.drop(uri)
        self.completions.scheduler.forget([f"next-edit:{uri}"])

    def config(self) -> EditConfig:
        o = self.completions.options
        return EditConfig().bar(o.next_edit_min_confidence)

    async def suggest(self, uri: str, pos: Pos, *, invoked: bool = False) -> NextEditResult:
        """Edits for the document at `pos` (empty, with a note, when there are none or the request is moot)."""
        svc, t0 = self.completions, time.perf_counter()
        rid = svc.next_id("n")
        doc = svc.docs.get(uri)
        o = svc.options
        if doc is None:
            return NextEditResult(uri, -1, [], rid, note=f"next edit: {uri} is not open")
        empty = NextEditResult(uri, doc.version, [], rid)
        if o.next_edit == "off" or (o.next_edit == "manual" and not invoked):
            return replace(empty, note="" if o.next_edit == "manual" else "next edits are off")
        if doc.binary or not o.language_enabled(doc.language):
            return replace(empty, note="next edit: not for this document")
        if not svc.ready:
            return replace(empty, note=f"next edit: model not ready ({svc.state})")
        lm = svc.model
        if not isinstance(lm, LoadedEngine):   # a remote `coda-lsp serve` has no next-edit stage
            note = "" if self.missing_stage_reported else \
                "next edits need the local model: the remote engine has no next-edit stage"
            self.missing_stage_reported = True
            return replace(empty, note=note)
        cursor = doc.offset_at(pos)
        win = edit_window(doc, cursor, o.next_edit_lines, self.tracker.region(uri), 4 * NEXT_EDIT_CONTEXT_TOKENS)
        if isinstance(win, str):
            return replace(empty, note=f"next edit: {win}")
        version, cfg = doc.version, self.config()
        ticket = svc.scheduler.ticket(f"next-edit:{uri}")

        def stale() -> bool:
            current = svc.docs.get(uri)
            return current is None or current.version != version

        budget = min(o.context_tokens, NEXT_EDIT_CONTEXT_TOKENS)
        job = await svc.scheduler.run(ticket, lambda: NextEditJob(lm, win, cfg, budget), lambda _p: None,
                                      0 if invoked else o.next_edit_debounce_ms, abort=stale)
        if job is None or stale():   # superseded, or the document moved on: never apply to another version
            return replace(empty, note="next edit: document changed, edits dropped" if job is not None else "")
        edits = sorted(job.edits(svc.docs.get(uri)), key=lambda e: -e.confidence)   # editors show the first
        total = time.perf_counter() - t0
        if not edits:
            log.debug("[%s] %s: no next edit (%d suspect spans)", rid, uri, len(job.found.suspects) if job.found else 0)
        else:
            log.info("[%s] %s: %d next edit(s) in %.0f ms", rid, uri, len(edits), 1000 * total)
        return NextEditResult(uri, version, edits, rid, total_s=total)

    def record_shown(self, result: NextEditResult) -> None:
        """Stats ids for the edits (each edit is one suggestion: accepted, rejected or dismissed)."""
        svc = self.completions
        o, m = svc.options, svc.model
        svc.stats.mode = o.stats
        # one suggestion per result, its edits the items; kept apart from the document's inline suggestions
        result.ids = svc.stats.show(f"next-edit:{result.uri}", [f"{e.old}\u2192{e.text}" for e in result.edits],
                                    latency_ms=1000 * result.total_s,
                                    model=m.path.name if hasattr(m, "path") else getattr(m, "url", "?"),
                                    settings=f"nextEditMinConfidence={o.next_edit_min_confidence:g}", kind="next_edit")
