"""Open documents: text, version, UTF-16 positions and a tree-sitter tree edited incrementally.

LSP positions are (line, UTF-16 code unit) pairs and lines end at `\\n`, `\\r\\n` or `\\r`. Python
strings index code points, and tree-sitter wants UTF-8 byte offsets plus (row, byte column)
points. `Document` converts between the three and keeps one tree per document that every change
edits (`tree.edit` + incremental `parse`), so the context extractor always has a current tree.

Clients send odd things: positions past the end of a line or the document are clamped (as the
spec says), an offset that lands inside a surrogate pair is rounded down to the character,
documents with NUL bytes are flagged binary, and very large documents are kept as text but never
parsed. Nothing here imports pygls.
"""

from __future__ import annotations

import bisect
import copy
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from coda_lsp.languages import canonical_language, new_parser

log = logging.getLogger(__name__)

MAX_PARSE_CHARS = 4_000_000   # bigger documents keep no tree (line-based context only)
_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Pos:
    """An LSP position: 0-based line and UTF-16 code-unit column."""
    line: int
    character: int


@dataclass(frozen=True)
class TextChange:
    """One `contentChanges` entry: `start`/`end` None means the whole document is replaced."""
    text: str
    start: Optional[Pos] = None
    end: Optional[Pos] = None


def utf16_len(s: str) -> int:
    """Length of `s` in UTF-16 code units."""
    if s.isascii():
        return len(s)
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


def _width(ch: str, encoding: str) -> int:
    """Code units of one character in the negotiated position encoding."""
    if encoding == "utf-8":
        return len(ch.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(ch) > 0xFFFF else 1


def units_len(s: str, encoding: str = "utf-16") -> int:
    if s.isascii() or encoding == "utf-32":
        return len(s)
    return sum(_width(ch, encoding) for ch in s)


def utf16_to_index(line: str, character: int, encoding: str = "utf-16") -> int:
    """Index into `line` for a column (UTF-16 units by default); past the end clamps, mid-character rounds down."""
    if character <= 0:
        return 0
    if line.isascii() or encoding == "utf-32":
        return min(character, len(line))
    units = 0
    for i, ch in enumerate(line):
        width = _width(ch, encoding)
        if units + width > character:
            return i
        units += width
    return len(line)


class Document:
    """One open text document. Positions in are UTF-16 (LSP); offsets out are str indices."""

    def __init__(self, uri: str, text: str, version: int = 0, language_id: str = "",
                 encoding: str = "utf-16") -> None:
        self.uri = uri
        self.encoding = encoding           # the negotiated LSP position encoding (utf-16 unless told)
        self.language = canonical_language(language_id, uri)
        self.version = version
        self.text = ""
        self.line_starts: list[int] = [0]
        self._tree = None
        self._stale: Optional[bool] = None  # None: the tree is current; else a parse is due (True: incremental)
        self.parser = None
        self.binary = False
        self.last_edit_offset = 0          # where the user last typed (for extra-context snippets)
        self.edited_at = time.monotonic()  # recency, most recently edited documents come first
        self._set_text(text)
        self._stale = False

    @property
    def tree(self):
        """The syntax tree (None for binary, huge or unknown-language documents), parsed on first use
        after a change. Keystrokes only edit the old tree (microseconds); the parse, a few ms with
        tree-sitter-python on a 2k-line file, runs once when a completion needs the context, so a
        burst of typing under the debounce costs one parse, not one per character."""
        if self._stale is not None:
            incremental, self._stale = self._stale, None
            self._parse(incremental)
        return self._tree

    # --- positions ---------------------------------------------------------------------------------
    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_text(self, line: int) -> str:
        """Text of a line without its end-of-line characters."""
        start = self.line_starts[line]
        end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else len(self.text)
        text = self.text[start:end]
        return text.rstrip("\r\n") if text.endswith(("\n", "\r")) else text

    def offset_at(self, pos: Pos) -> int:
        """str index of an LSP position, clamped into the document."""
        if pos.line < 0:
            return 0
        if pos.line >= len(self.line_starts):
            return len(self.text)
        return self.line_starts[pos.line] + utf16_to_index(self.line_text(pos.line), pos.character, self.encoding)

    def position_at(self, offset: int) -> Pos:
        """LSP position of a str index."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        return Pos(line, units_len(self.text[start:offset], self.encoding))

    def byte_offset(self, offset: int) -> int:
        return len(self.text[:offset].encode("utf-8", "surrogatepass"))

    def index_of_byte(self, byte: int) -> int:
        """str index of a UTF-8 byte offset (tree-sitter node boundaries -> text indices)."""
        if self._ascii:
            return max(0, min(byte, len(self.text)))
        if self._line_bytes is None:  # cumulative UTF-8 length of each line start, built once per version
            acc, out = 0, []
            for i, start in enumerate(self.line_starts):
                out.append(acc)
                end = self.line_starts[i + 1] if i + 1 < len(self.line_starts) else len(self.text)
                acc += len(self.text[start:end].encode("utf-8", "surrogatepass"))
            self._line_bytes = out
        line = max(0, bisect.bisect_right(self._line_bytes, byte) - 1)
        start = self.line_starts[line]
        end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else len(self.text)
        raw = self.text[start:end].encode("utf-8", "surrogatepass")[:byte - self._line_bytes[line]]
        return start + len(raw.decode("utf-8", "ignore"))

    def _point(self, offset: int) -> tuple[int, int]:
        """tree-sitter (row, byte column) of a str index; rows count `\\n` like tree-sitter does."""
        row = self.text.count("\n", 0, offset)
        line_start = self.text.rfind("\n", 0, offset) + 1
        return row, len(self.text[line_start:offset].encode("utf-8", "surrogatepass"))

    # --- edits -------------------------------------------------------------------------------------
    def apply_changes(self, changes: Iterable[TextChange], version: Optional[int] = None) -> None:
        """Apply didChange content changes in order, then reparse once (incrementally)."""
        incremental = self._stale is not False   # a full-text change since the last parse stays full
        for change in changes:
            if change.start is None or change.end is None:
                self._set_text(change.text)
                incremental = False
                continue
            start, end = self.offset_at(change.start), self.offset_at(change.end)
            if end < start:
                start, end = end, start
            if self._tree is not None and incremental:
                self._edit_tree(start, end, change.text)
            self._set_text(self.text[:start] + change.text + self.text[end:], (start, end, start + len(change.text)))
            self.last_edit_offset = start + len(change.text)
        if version is not None:
            self.version = version
        self.edited_at = time.monotonic()
        self._stale = incremental

    def fork(self, start: int, end: int, new_text: str) -> "Document":
        """A detached copy with [start, end) replaced, this document untouched: the text as it will
        be if the user accepts a completion. The tree is copied and edited, so the copy's parse is
        incremental (milliseconds) rather than a full parse."""
        tree = self.tree
        twin = copy.copy(self)
        twin._tree = tree.copy() if tree is not None else None
        twin.apply_changes([TextChange(new_text, self.position_at(start), self.position_at(end))])
        twin.version = self.version
        return twin

    def _edit_tree(self, start: int, end: int, new_text: str) -> None:
        from tree_sitter import Point
        start_byte, old_end_byte = self.byte_offset(start), self.byte_offset(end)
        start_pt, old_end_pt = self._point(start), self._point(end)
        new_bytes = new_text.encode("utf-8", "surrogatepass")
        nl = new_text.count("\n")
        if nl:
            new_end_pt = (start_pt[0] + nl, len(new_text[new_text.rfind("\n") + 1:].encode("utf-8", "surrogatepass")))
        else:
            new_end_pt = (start_pt[0], start_pt[1] + len(new_bytes))
        self._tree.edit(start_byte=start_byte, old_end_byte=old_end_byte, new_end_byte=start_byte + len(new_bytes),
                       start_point=Point(*start_pt), old_end_point=Point(*old_end_pt), new_end_point=Point(*new_end_pt))

    def _set_text(self, text: str, edit: Optional[tuple[int, int, int]] = None) -> None:
        """Replace the text. `edit` = (start, old_end, new_end) of an incremental change: line starts
        are rescanned only around it and shifted after it, so a keystroke at the top of a 50 MB file
        does not rescan the whole file."""
        if edit is None:
            starts = [0]
            starts.extend(m.end() for m in _EOL.finditer(text))
            self._ascii = text.isascii()
        else:
            start, old_end, new_end = edit
            old = self.line_starts
            keep = max(0, bisect.bisect_right(old, max(0, start - 1)) - 1)   # a \r before start may pair with a new \n
            starts = old[:keep + 1]
            # starts up to new_end + 2 depend on changed text (or a \r\n straddling its end); later ones
            # are the old ones shifted, since the two characters that decide them did not change
            limit = new_end + 2
            starts.extend(e for e in (m.end() for m in _EOL.finditer(text, starts[-1], min(len(text), limit + 1)))
                          if e <= limit)
            delta = new_end - old_end
            tail = old[bisect.bisect_right(old, old_end + 2):]
            starts.extend(map(delta.__add__, tail) if delta else tail)
            self._ascii = self._ascii and text[start:new_end].isascii()   # False is only a slower path
        self.text = text
        self.line_starts = starts
        self.cache: dict[str, object] = {}   # derived facts (indent unit, ...) valid until the next change
        self._line_bytes: Optional[list[int]] = None
        self.binary = "\x00" in text[:8192]

    def _parse(self, incremental: bool) -> None:
        if self.binary or len(self.text) > MAX_PARSE_CHARS:
            self._tree = None
            return
        if self.parser is None:
            self.parser = new_parser(self.language)
            if self.parser is None:
                return
            incremental = False
        data = self.text.encode("utf-8", "surrogatepass")
        if incremental and self._tree is not None:
            self._tree = self.parser.parse(data, self._tree)
        else:
            self._tree = self.parser.parse(data)


class DocumentStore:
    """All open documents by URI. Unknown URIs give None, never an exception."""

    def __init__(self, encoding: str = "utf-16") -> None:
        self._docs: dict[str, Document] = {}
        self.encoding = encoding

    def open(self, uri: str, text: str, version: int = 0, language_id: str = "") -> Document:
        doc = Document(uri, text, version, language_id, self.encoding)
        self._docs[uri] = doc
        return doc

    def change(self, uri: str, changes: Iterable[TextChange], version: Optional[int]) -> Optional[Document]:
        doc = self._docs.get(uri)
        if doc is None:
            log.warning("didChange for %s, which is not open: ignored (the client must send didOpen first)", uri)
            return None
        doc.apply_changes(changes, version)
        return doc

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def get(self, uri: str) -> Optional[Document]:
        return self._docs.get(uri)

    def others(self, uri: str, language: str) -> list[Document]:
        """Other open documents of the same language, most recently edited first."""
        docs = [d for u, d in self._docs.items() if u != uri and d.language == language and not d.binary]
        return sorted(docs, key=lambda d: d.edited_at, reverse=True)

    def __len__(self) -> int:
        return len(self._docs)

    def stats(self) -> dict[str, int]:
        """What the open documents hold (the client bounds their number by opening and closing)."""
        docs = list(self._docs.values())
        return {"open": len(docs), "trees": sum(d._tree is not None for d in docs),
                "text_bytes": sum(sys.getsizeof(d.text) for d in docs)}
