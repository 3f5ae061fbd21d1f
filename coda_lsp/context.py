"""What the model sees for one hole: prefix and suffix cut on syntax boundaries, extra context, hole shape.

`build_context(doc, start, end, ...)` is a pure function of a `Document` (and the other open
documents). It decides:

* the **hole shape** - `line` (finish or fill the rest of a line; one line out), `block` (a blank
  line or a fresh block body; several lines until the code dedents out of the block) or
  `selection` (rewrite a selected range) - and from it the number of mask tokens (`length`);
* the **replace range**: when the rest of the line is only closers (`)]};` ...), it is taken out of
  the suffix and covered by the item's range, so the model may re-emit them without doubling them;
* the **prefix/suffix cut**: candidate cut points are the start/end of every syntax node on the
  path from the root to the cursor and of their siblings (so the cut falls between statements,
  functions, classes), or line starts without a tree; the furthest cut within the token budget wins,
  the prefix getting `prefix_share` of the budget and either side's leftover going to the other;
* the **extra context**: the file's imports (when the cut dropped them) and snippets from other open
  documents of the same language, most recently edited first, as comments headed `Path: ...`,
  within up to `extra_share` of the same budget.

Tokens are estimated as characters / `CHARS_PER_TOKEN` here (encoding every candidate would cost
more than the rest of the request); the service encodes the result and trims the far ends if the
estimate was short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from coda_lsp.documents import Document
from coda_lsp.languages import spec_for
from coda_lsp.options import LINE_TOKENS, ServerOptions

_SERVER = ServerOptions()

CHARS_PER_TOKEN = 3.0
_CLOSERS_ONLY = re.compile(r"^[\s\)\]\}\"'`;,:>]*$")
_IMPORT_LINE = re.compile(r"^\s*(import\s|from\s+\S+\s+import\s|#\s*include\b|use\s|using\s|require[\s(])")


@dataclass
class ContextConfig:
    # the three budgets default to the server's (`ServerOptions`, one definition); `pipeline.context_config` sets them
    context_tokens: int = _SERVER.context_tokens     # budget for prefix + suffix + extra context
    max_tokens: int = _SERVER.max_tokens             # length budget (mask tokens) of a block hole
    line_tokens: Optional[int] = None                # rest-of-line hole budget; None = min(LINE_TOKENS, max_tokens)
    prefix_share: float = 0.7       # part of the file budget the prefix gets first
    extra_share: float = 0.2        # at most this part of the budget goes to imports / other documents
    snippet_lines: int = 30         # lines taken around the last edit of another open document
    max_snippets: int = 3

    def __post_init__(self) -> None:
        if self.line_tokens is None:
            self.line_tokens = min(LINE_TOKENS, self.max_tokens)


@dataclass
class CompletionContext:
    language: str
    kind: str                       # "line" | "block" | "selection"
    start: int                      # str index where the hole starts (cursor or selection start)
    end: int                        # str index where the replaced range ends (>= start)
    prefix: str                     # file text before the hole, cut on a syntax boundary
    suffix: str                     # file text after the replaced range, cut on a syntax boundary
    extra: str                      # commented extra context placed before the prefix ("" if none)
    length: int                     # number of mask tokens
    line_prefix: str                # text of the cursor line before the hole
    line_suffix: str                # text of the last hole line after the replaced range
    indent: str                     # block holes: lines indented less than this end the completion
    indent_unit: str = "    "       # the document's indentation step
    replaced: str = ""              # text of the document inside [start, end)
    extra_parts: list[str] = field(default_factory=list)  # "imports", "path:<uri>" (for tests and logs)

    @property
    def single_line(self) -> bool:
        return self.kind == "line"


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN + 0.999)


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def detect_indent_unit(doc: Document, max_lines: int = 400) -> str:
    """The indentation step most used in the document (tab or N spaces); 4 spaces by default.

    Cached on the document until its next change."""
    cached = doc.cache.get("indent_unit")
    if cached is None:
        cached = doc.cache["indent_unit"] = _detect_indent_unit(doc, max_lines)
    return cached


def _detect_indent_unit(doc: Document, max_lines: int) -> str:
    tabs = spaces = 0
    steps: dict[int, int] = {}
    prev = 0
    for i in range(min(doc.line_count, max_lines)):
        line = doc.line_text(i)
        if not line.strip():
            continue
        ws = leading_ws(line)
        if ws.startswith("\t"):
            tabs += 1
        elif ws:
            spaces += 1
            if len(ws) > prev:
                steps[len(ws) - prev] = steps.get(len(ws) - prev, 0) + 1
        prev = len(ws) if not ws.startswith("\t") else prev
    if tabs > spaces:
        return "\t"
    return " " * max(steps, key=steps.get) if steps else "    "


def hole_shape(doc: Document, start: int, end: int, cfg: ContextConfig) -> tuple[str, int, str]:
    """(kind, replace end, block indent) for a hole [start, end)."""
    pos = doc.position_at(start)
    line = doc.line_text(pos.line)
    line_start = doc.line_starts[pos.line]
    col = start - line_start
    before, after = line[:col], line[col:]
    if end > start:
        return "selection", end, leading_ws(before if before.strip() else line)
    if after.strip():
        if _CLOSERS_ONLY.match(after):   # only closers left: replace them (the model may re-emit them)
            return "line", line_start + len(line), ""
        return "line", start, ""
    if not before.strip():
        return "block", start, before
    spec = spec_for(doc.language)
    if before.rstrip().endswith(spec.block_openers):
        return "block", start, leading_ws(before) + detect_indent_unit(doc)
    return "line", start, ""


def _boundaries(doc: Document, start: int, end: int) -> tuple[list[int], list[int]]:
    """Candidate prefix cuts (<= start) and suffix cuts (>= end) as str indices, nearest first."""
    pre: set[int] = {0, doc.line_starts[doc.position_at(start).line]}
    suf: set[int] = {len(doc.text)}
    if doc.tree is not None:
        sb, eb = doc.byte_offset(start), doc.byte_offset(end)
        node = doc.tree.root_node
        while node is not None:
            nxt = None
            for child in node.children:
                if child.end_byte <= sb:
                    pre.add(child.start_byte)
                elif child.start_byte >= eb:
                    suf.add(child.end_byte)
                else:   # overlaps the hole: its own start/end may be cuts, and it may contain the hole
                    if child.start_byte <= sb:
                        pre.add(child.start_byte)
                    if child.end_byte >= eb:
                        suf.add(child.end_byte)
                    if nxt is None and child.start_byte <= sb and child.end_byte >= eb and child.child_count:
                        nxt = child
            node = nxt
        pre = {doc.index_of_byte(b) for b in pre if b <= sb} | {0}
        suf = {doc.index_of_byte(b) for b in suf if b >= eb} | {len(doc.text)}
        # a cut at a node start keeps that line's indentation out; cut at the line start instead
        pre = {_line_start_if_blank_before(doc, p) for p in pre}
        pre.discard(-1)
    else:
        first = max(0, doc.position_at(start).line - 2000)
        last = min(doc.line_count, doc.position_at(end).line + 2000)
        pre |= {s for s in doc.line_starts[first:last] if s <= start}
        suf |= {s for s in doc.line_starts[first:last] if s >= end}
    # the suffix should end at a line end: extend a node end to its line's end
    suf = {min(len(doc.text), doc.line_starts[doc.position_at(s).line] + len(doc.line_text(doc.position_at(s).line)))
           if s < len(doc.text) else s for s in suf}
    return sorted((p for p in pre if p <= start), reverse=True), sorted(s for s in suf if s >= end)


def _line_start_if_blank_before(doc: Document, offset: int) -> int:
    """The line start when only indentation precedes `offset` on its line, else -1 (not a clean cut)."""
    line_start = doc.line_starts[doc.position_at(offset).line]
    return line_start if not doc.text[line_start:offset].strip() else -1


def _furthest(cands: Sequence[int], anchor: int, budget: int, *, before: bool) -> int:
    """Furthest candidate whose span to the anchor fits the token budget."""
    best = anchor
    for c in cands:
        span = anchor - c if before else c - anchor
        if span / CHARS_PER_TOKEN > budget:
            break
        best = c
    return best


def _imports(doc: Document, cut: int) -> str:
    """Import statements that start before `cut` (so the prefix lost them)."""
    spec = spec_for(doc.language)
    out: list[str] = []
    if doc.tree is not None and spec.import_types:
        limit = doc.byte_offset(cut)
        for child in doc.tree.root_node.children:
            if child.start_byte >= limit:
                break
            if child.type in spec.import_types:
                out.append(doc.text[doc.index_of_byte(child.start_byte):doc.index_of_byte(child.end_byte)])
    else:
        for line in doc.text[:cut].splitlines():
            if _IMPORT_LINE.match(line):
                out.append(line)
    return "\n".join(out)


def _snippet(other: Document, num_lines: int) -> str:
    """Lines around the other document's last edit."""
    line = other.position_at(other.last_edit_offset).line
    first = max(0, line - num_lines // 2)
    last = min(other.line_count, first + num_lines)
    return "\n".join(other.line_text(i) for i in range(first, last)).strip("\n")


def _commented(text: str, comment: str) -> str:
    return "\n".join(f"{comment} {line}" if line else comment for line in text.split("\n"))


def _display_path(uri: str) -> str:
    path = uri.split("://", 1)[-1]
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[-2:]) if parts else uri


def build_extra(doc: Document, others: Sequence[Document], prefix_cut: int, budget: int,
                cfg: ContextConfig) -> tuple[str, list[str]]:
    """Imports dropped from the prefix, then snippets of other documents, within `budget` tokens."""
    comment = spec_for(doc.language).comment
    parts: list[str] = []
    names: list[str] = []
    used = 0
    if prefix_cut > 0:
        imports = _imports(doc, prefix_cut)
        if imports:
            block = f"{comment} Imports of {_display_path(doc.uri)}:\n{imports}\n"
            if estimate_tokens(block) <= budget:
                parts.append(block)
                names.append("imports")
                used += estimate_tokens(block)
    for other in list(others)[: cfg.max_snippets]:
        snippet = _snippet(other, cfg.snippet_lines)
        if not snippet.strip():
            continue
        block = f"{comment} Path: {_display_path(other.uri)}\n{_commented(snippet, comment)}\n\n"
        cost = estimate_tokens(block)
        if used + cost > budget:
            lines = block.split("\n")
            while lines and used + estimate_tokens("\n".join(lines)) > budget:
                lines.pop()
            if len(lines) < 3:
                continue
            block = "\n".join(lines) + "\n\n"
            cost = estimate_tokens(block)
        parts.append(block)
        names.append(f"path:{other.uri}")
        used += cost
    # other documents first, then this file's imports right before the prefix
    ordered = [p for p, n in zip(parts, names) if n != "imports"] + [p for p, n in zip(parts, names) if n == "imports"]
    return "".join(ordered), names


def build_context(doc: Document, start: int, end: Optional[int] = None, *, others: Sequence[Document] = (),
                  cfg: ContextConfig = ContextConfig()) -> CompletionContext:
    """Context for a hole at `start` (cursor) or over the selection [start, end)."""
    start = max(0, min(start, len(doc.text)))
    end = start if end is None else max(start, min(end, len(doc.text)))
    kind, rend, indent = hole_shape(doc, start, end, cfg)
    pos = doc.position_at(start)
    line_prefix = doc.text[doc.line_starts[pos.line]:start]
    end_pos = doc.position_at(rend)
    line_suffix = doc.line_text(end_pos.line)[rend - doc.line_starts[end_pos.line]:]
    if kind == "line":
        length = max(1, min(cfg.line_tokens, cfg.max_tokens))
    elif kind == "block":
        length = max(1, cfg.max_tokens)
    else:
        length = max(8, min(int(estimate_tokens(doc.text[start:end]) * 1.5) + 8, 4 * cfg.max_tokens))

    budget = max(16, cfg.context_tokens)
    extra_budget = int(budget * cfg.extra_share) if (others or start > 0) else 0
    pre_cands, suf_cands = _boundaries(doc, start, rend)
    file_budget = budget - extra_budget
    pre_budget = int(file_budget * cfg.prefix_share)
    cut_pre = _furthest(pre_cands, start, pre_budget, before=True)
    pre_used = estimate_tokens(doc.text[cut_pre:start])
    cut_suf = _furthest(suf_cands, rend, file_budget - pre_used, before=False)
    suf_used = estimate_tokens(doc.text[rend:cut_suf])
    cut_pre = _furthest(pre_cands, start, file_budget - suf_used, before=True)  # the suffix's leftover
    extra, names = ("", [])
    if extra_budget:
        extra, names = build_extra(doc, others, cut_pre, extra_budget, cfg)
        left = extra_budget - estimate_tokens(extra)
        if left > 0:   # what the extra context left unused goes back to the prefix
            cut_pre = _furthest(pre_cands, start, file_budget - suf_used + left, before=True)
            if cut_pre == 0 and "imports" in names:
                extra, names = build_extra(doc, others, 0, extra_budget, cfg)
    return CompletionContext(
        language=doc.language, kind=kind, start=start, end=rend, prefix=doc.text[cut_pre:start],
        suffix=doc.text[rend:cut_suf], extra=extra, length=length, line_prefix=line_prefix,
        line_suffix=line_suffix, indent=indent, indent_unit=detect_indent_unit(doc),
        replaced=doc.text[start:rend], extra_parts=names)
