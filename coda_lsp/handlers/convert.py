"""Conversions between LSP types and the service's plain data."""

from __future__ import annotations

from typing import Any, Optional

from lsprotocol import types

from coda_lsp.documents import Pos, TextChange


def pos_in(p: types.Position) -> Pos:
    return Pos(int(p.line), int(p.character))


def pos_out(p: Pos) -> types.Position:
    return types.Position(line=max(0, p.line), character=max(0, p.character))


def range_out(start: Pos, end: Pos) -> types.Range:
    return types.Range(start=pos_out(start), end=pos_out(end))


def change_in(change: Any) -> TextChange:
    rng = getattr(change, "range", None)
    if rng is None:
        return TextChange(change.text)
    return TextChange(change.text, pos_in(rng.start), pos_in(rng.end))


def raw_range(value: Any) -> Optional[tuple[Pos, Pos]]:
    """A range from a command argument (a plain dict); None when malformed."""
    try:
        s, e = value["start"], value["end"]
        return Pos(int(s["line"]), int(s["character"])), Pos(int(e["line"]), int(e["character"]))
    except (KeyError, TypeError, ValueError):
        return None
