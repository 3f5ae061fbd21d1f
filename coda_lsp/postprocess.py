"""Clean-up of model text: a chain of small pure functions, each pinned by golden fixtures.

Each step takes the completion text and a `PostContext` (what surrounds the hole) and returns the
new text, or None to drop the item. The chain (`CHAIN`, run by `postprocess`) is:

1. `normalize_newlines` - `\\r\\n`/`\\r` to `\\n` (the document's EOL is applied by the client);
2. `fix_indentation`    - no indentation doubled at the cursor, tabs/spaces as the document uses;
3. `stop_at_unit_end`   - a line hole keeps one line; a block hole stops where the code dedents
                           out of the block;
4. `drop_suffix_duplicate` - text the suffix already has (trailing lines equal to the next lines,
                           a tail equal to the start of the rest of the line) goes;
5. `balance_brackets`   - closers the suffix already provides are not doubled; brackets and quotes
                           the completion opens on a finished line are closed;
6. `trim_whitespace`    - trailing blanks and blank lines;
7. `drop_empty`         - whitespace-only items are dropped.

Fixtures live in `tests/fixtures/postprocess/<step>.toml` (`├`/`┤` mark the completion inside the
document). Nothing here knows about LSP or the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

OPEN_TO_CLOSE = {"(": ")", "[": "]", "{": "}"}
CLOSE_TO_OPEN = {v: k for k, v in OPEN_TO_CLOSE.items()}
QUOTES = ("\"", "'", "`")


@dataclass(frozen=True)
class PostContext:
    kind: str = "line"          # "line" | "block" | "selection"
    line_prefix: str = ""       # cursor line before the hole
    line_suffix: str = ""       # rest of the line after the replaced range
    suffix: str = ""            # document text after the replaced range (as far as it matters)
    indent: str = ""            # block holes: a non-blank line indented less than this ends the block
    indent_unit: str = "    "   # the document's indentation step
    truncated: bool = False     # the confidence gate cut the text: what follows is unsure, so close nothing


Step = Callable[[str, PostContext], Optional[str]]


def leading_ws(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def unify_newlines(text: str) -> str:
    """Model text may hold `\\r\\n` or a lone `\\r`; editors draw those as `^M` in ghost text."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalize_newlines(text: str, ctx: PostContext) -> Optional[str]:
    return unify_newlines(text)


def fix_indentation(text: str, ctx: PostContext) -> Optional[str]:
    """Strip indentation the cursor line already has; convert tabs <-> spaces to the document's unit."""
    lines = text.split("\n")
    if ctx.line_prefix and not ctx.line_prefix.strip() and lines[0][:1] in (" ", "\t"):
        lines[0] = lines[0].lstrip(" \t")
    unit = ctx.indent_unit or "    "
    out = [lines[0]]
    for line in lines[1:]:
        ws = leading_ws(line)
        if unit == "\t" and " " in ws:
            width = len(ws.replace("\t", "    "))
            ws = "\t" * (width // 4) + " " * (width % 4)
        elif unit != "\t" and "\t" in ws:
            ws = ws.replace("\t", unit)
        out.append(ws + line[len(leading_ws(line)):])
    return "\n".join(out)


def stop_at_unit_end(text: str, ctx: PostContext) -> Optional[str]:
    """Line holes: the first line only. Block holes: stop at the first line that leaves the block."""
    if ctx.kind == "line":
        return text.split("\n", 1)[0]
    if ctx.kind != "block":
        return text
    lines = text.split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and len(leading_ws(line).replace("\t", "    ")) < len(ctx.indent.replace("\t", "    ")):
            break
        kept.append(line)
    return "\n".join(kept)


def _overlap(tail_of: str, head_of: str) -> int:
    """Length of the longest suffix of `tail_of` that is a prefix of `head_of`."""
    for k in range(min(len(tail_of), len(head_of)), 0, -1):
        if tail_of.endswith(head_of[:k]):
            return k
    return 0


def drop_suffix_duplicate(text: str, ctx: PostContext) -> Optional[str]:
    """Remove what the suffix already contains (whole lines at the end, or the rest-of-line tail)."""
    after = [l for l in ctx.suffix.split("\n") if l.strip()]
    if "\n" in text and after:
        lines = text.split("\n")
        # trailing completion lines equal to the next lines of the document
        for n in range(min(len(lines) - 1, len(after)), 0, -1):
            tail = [l.strip() for l in lines[-n:] if l.strip()]
            if tail and tail == [l.strip() for l in after[: len(tail)]]:
                lines = lines[:-n]
                break
        text = "\n".join(lines)
    rest = ctx.line_suffix.strip()
    if rest:
        if text.strip() == rest:
            return ""
        last = text.rstrip()
        k = _overlap(last, rest)
        if k and (k >= 3 or not re.search(r"\w", rest[:k])):
            text = last[: len(last) - k]
    return text


def _scan(text: str) -> tuple[list[str], int, Optional[str]]:
    """(openers left open, closers with no opener, quote left open) in `text`, skipping string literals."""
    stack: list[str] = []
    extra_closers = 0
    quote = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in QUOTES:
            quote = ch
        elif ch in OPEN_TO_CLOSE:
            stack.append(ch)
        elif ch in CLOSE_TO_OPEN:
            if stack and stack[-1] == CLOSE_TO_OPEN[ch]:
                stack.pop()
            else:
                extra_closers += 1
    return stack, extra_closers, quote


def _unmatched(text: str) -> tuple[list[str], int]:
    """(openers left open, closers with no opener) in `text`, skipping string literals."""
    stack, extra_closers, _ = _scan(text)
    return stack, extra_closers


def _open_quote(text: str) -> Optional[str]:
    """The quote character left open at the end of `text` (one line), if any."""
    return _scan(text)[2]


def balance_brackets(text: str, ctx: PostContext) -> Optional[str]:
    """Balance the hole's last line against the line prefix and the rest of the line."""
    if ctx.kind == "selection" or not text:
        return text
    multiline = "\n" in text
    last_line = text.rsplit("\n", 1)[1] if multiline else text
    line_prefix = "" if multiline else ctx.line_prefix
    rest = ctx.line_suffix.lstrip()
    suffix_closers = len(rest) - len(rest.lstrip(")]}"))
    prefix_open, _ = _unmatched(line_prefix)
    _, own_extra = _unmatched(last_line)
    # closers beyond what the line opened, when the rest of the line already closes: drop them
    too_many = min(own_extra, own_extra + suffix_closers - len(prefix_open))
    while too_many > 0 and text.rstrip() and text.rstrip()[-1] in CLOSE_TO_OPEN:
        text = text.rstrip()[:-1]
        too_many -= 1
    quote = _open_quote(line_prefix + (text.rsplit("\n", 1)[1] if multiline else text))
    if quote and rest.startswith(quote):
        return text
    if quote is None and text[-1:] in QUOTES and rest.startswith(text[-1]) and _open_quote(line_prefix) == text[-1]:
        return text[:-1]
    if ctx.kind == "line" and not rest and not ctx.truncated:
        if quote:
            text += quote
        still_open, _ = _unmatched(ctx.line_prefix + text)
        mine = still_open[len(prefix_open):] if still_open[: len(prefix_open)] == prefix_open else []
        text += "".join(OPEN_TO_CLOSE[o] for o in reversed(mine))
    return text


def trim_whitespace(text: str, ctx: PostContext) -> Optional[str]:
    """No trailing blanks on lines, no trailing blank lines; keep a space before a non-empty rest of line."""
    lines = [l.rstrip() for l in text.split("\n")]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    out = "\n".join(lines)
    if ctx.line_suffix and text.endswith(" ") and not ctx.line_suffix.startswith(" ") and "\n" not in out:
        out += " "
    return out


def drop_empty(text: str, ctx: PostContext) -> Optional[str]:
    return text if text.strip() else None


CHAIN: tuple[Step, ...] = (normalize_newlines, fix_indentation, stop_at_unit_end, drop_suffix_duplicate,
                           balance_brackets, trim_whitespace, drop_empty)
STEPS: dict[str, Step] = {f.__name__: f for f in CHAIN}


def postprocess(text: str, ctx: PostContext, chain: tuple[Step, ...] = CHAIN) -> Optional[str]:
    """Run the chain; None means "do not show this item"."""
    for step in chain:
        out = step(text, ctx)
        if out is None:
            return None
        text = out
    return text
