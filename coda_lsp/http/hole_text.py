"""What a client sees of one row of a denoising batch: partial text, the settled left part, the final text.

Diffusion reveals tokens anywhere in the hole, but a token once revealed never changes. The *settled*
text is the run of revealed tokens from the hole's start: it only grows, so a plain (non-denoise) SSE
stream can send it as `content` deltas that concatenate to the final answer, as llama.cpp clients expect.
Stop strings and `n_indent` are applied to every text a client sees; while the row is not finished, the
tail that a later token could still turn into a stop string (or an under-indented line) is held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cut:
    text: str
    stop_type: str          # llama.cpp's: "eos" (the model ended the hole), "word" (a stop string), "limit"
    stopping_word: str = ""


def settled_ids(tokens: list[int], masked: list[bool], stop_ids: set[int]) -> tuple[list[int], bool]:
    """The revealed ids from the hole's start up to the first mask or stop id; True if a stop id ended them."""
    out = []
    for tok, is_masked in zip(tokens, masked):
        if is_masked:
            return out, False
        if tok in stop_ids:
            return out, True
        out.append(tok)
    return out, False


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).replace("\ufffd", "") if ids else ""


def apply_stops(text: str, stop: tuple[str, ...], n_indent: int, ended: bool) -> Cut:
    """Cut at the first stop string, then before the first later line indented less than `n_indent`."""
    stop_type, word = ("eos" if ended else "limit"), ""
    hits = [(text.find(s), s) for s in stop if s in text]
    if hits:
        at, word = min(hits)
        text, stop_type = text[:at], "word"
    if n_indent > 0:
        lines = text.split("\n")
        for i, line in enumerate(lines[1:], 1):
            if line.strip() and len(line) - len(line.lstrip(" \t")) < n_indent:
                return Cut("\n".join(lines[:i]) + "\n", "eos")
    return Cut(text, stop_type, word)


def visible_settled(text: str, stop: tuple[str, ...], n_indent: int) -> str:
    """The settled text a stream may send before the row is finished (held back: what could still change)."""
    cut = apply_stops(text, stop, n_indent, ended=False)
    if cut.stop_type != "limit" or cut.text != text:
        return cut.text
    hold = max((len(s) - 1 for s in stop), default=0)
    out = text[:len(text) - hold] if hold else text
    if n_indent > 0:   # the last line's indentation may still grow
        out = out[:out.rfind("\n") + 1]
    return out


def finished_lines(text: str) -> str:
    """`t_max_predict_ms` ran out: keep the complete lines only (llama.cpp stops at a newline once over time)."""
    return text[:text.rfind("\n") + 1] if "\n" in text else ""
