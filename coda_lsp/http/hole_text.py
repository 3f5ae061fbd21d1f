"""What a client sees of one row of a denoising batch: partial text, the settled left part, the final text.

Diffusion reveals tokens anywhere in the hole, but a token once revealed never changes. The *settled*
text is the run of revealed tokens from the hole's start: it only grows, so a plain (non-denoise) SSE
stream can send it as `content` deltas that concatenate to the final answer, as llama.cpp clients expect.
Stop strings and `n_indent` are applied to every text a client sees; while the row is not finished, the
tail that a later token could still turn into a stop string (or an under-indented line) is held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from coda_lsp.gate import Candidate, GateConfig, cut, first_line_score


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


def pieces_of(spans: list[tuple[str, float]], text: str) -> tuple[tuple[str, float], ...]:
    """The engine's (token text, confidence) pieces of a hole, as far as `text` (a start of the pieces'
    join: the hole's text after stops and n_indent): what the confidence gate reads, local or remote."""
    out, n = [], 0
    for piece, conf in spans:
        if n >= len(text):
            break
        piece = piece[: len(text) - n]
        out.append((piece, float(conf)))
        n += len(piece)
    return tuple(out)


def gate_row(spans: list[tuple[str, float]], final: Optional[Cut], visible: str,
             gate: GateConfig) -> tuple[Optional[Cut], str, str]:
    """The language server's confidence gate on what a client sees of a row: (final, visible, outcome).

    The text ends before its first unsure token (outcome "cut", final at once: a settled token never
    changes), or nothing is shown when the first line scores below `min_shown_confidence` ("hidden").
    While the row runs with that threshold on, a first line not yet complete is held back, so a stream
    never sends what the gate may still hide."""
    if gate.off:
        return final, visible, ""
    seen = final.text if final is not None else visible
    cand = Candidate.of(pieces_of(spans, seen))
    if gate.min_shown_confidence > 0.0:
        code = complete = False
        for s in cand.spans:
            head, nl, _ = s.text.partition("\n")
            code = code or bool(head.strip())
            if nl and code:
                complete = True
                break
        if not complete and final is None:
            return None, "", ""
        if first_line_score(cand, gate.score) < gate.min_shown_confidence:
            return Cut("", final.stop_type if final is not None else "eos"), "", "hidden"
    text, was_cut = cut(cand, gate.min_confidence)
    if was_cut:
        return Cut(text, "eos"), text, "cut"
    return final, visible, ""
