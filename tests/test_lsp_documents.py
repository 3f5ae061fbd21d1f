"""Documents: full/incremental sync, UTF-16 positions (emoji, CJK, CRLF), incremental tree-sitter trees."""

from __future__ import annotations

import random

from coda_lsp.documents import Document, DocumentStore, Pos, TextChange, utf16_len


def edit(doc: Document, sl, sc, el, ec, text, version=None):
    doc.apply_changes([TextChange(text, Pos(sl, sc), Pos(el, ec))], version)


def test_utf16_positions_count_emoji_as_two_units_and_cjk_as_one():
    doc = Document("file:///a.py", "s = '😀中x'\n", 1, "python")
    # columns: s=0 ' '=1 '='=2 ' '=3 "'"=4 😀=5,6 中=7 x=8
    assert doc.offset_at(Pos(0, 7)) == doc.text.index("中")
    assert doc.offset_at(Pos(0, 8)) == doc.text.index("x")
    assert doc.position_at(doc.text.index("x")) == Pos(0, 8)
    assert utf16_len("😀中") == 3


def test_offset_inside_a_surrogate_pair_rounds_down_to_the_character():
    doc = Document("file:///a.py", "😀b", 1, "python")
    assert doc.offset_at(Pos(0, 1)) == 0
    assert doc.offset_at(Pos(0, 2)) == 1


def test_positions_past_the_end_are_clamped():
    doc = Document("file:///a.py", "ab\ncd", 1, "python")
    assert doc.offset_at(Pos(0, 99)) == 2
    assert doc.offset_at(Pos(7, 3)) == len(doc.text)
    assert doc.offset_at(Pos(-1, 0)) == 0


def test_crlf_and_lone_cr_end_lines():
    doc = Document("file:///a.c", "a\r\nb\rc\nd", 1, "c")
    assert [doc.line_text(i) for i in range(doc.line_count)] == ["a", "b", "c", "d"]
    edit(doc, 1, 1, 2, 0, "X\r\n")          # replace "\r" + join: b X CRLF c
    assert doc.text == "a\r\nbX\r\nc\nd"
    assert doc.line_count == 4 and doc.line_text(1) == "bX"


def test_incremental_edit_spanning_lines_and_full_replace():
    doc = Document("file:///a.py", "def f():\n    return 1\n", 1, "python")
    edit(doc, 1, 11, 1, 12, "x + 😀", 2)
    assert doc.text == "def f():\n    return x + 😀\n" and doc.version == 2
    edit(doc, 0, 4, 1, 4, "g():\n", 3)
    assert doc.text == "def g():\nreturn x + 😀\n"
    doc.apply_changes([TextChange("y = 1\n")], 4)
    assert doc.text == "y = 1\n" and doc.line_count == 2


def test_incremental_tree_matches_a_fresh_parse_after_random_edits():
    rng = random.Random(0)
    text = "import os\n\nclass A:\n    def f(self, x):\n        return [x, '中', {1: 2}]\n"
    doc = Document("file:///a.py", text, 1, "python")
    for v in range(60):
        line = rng.randrange(doc.line_count)
        col = rng.randrange(utf16_len(doc.line_text(line)) + 1)
        insert = rng.choice(["x", "(", ")", "\n    ", "😀", "'", ": ", "def g():\n  pass\n", ""])
        if rng.random() < 0.3:
            edit(doc, line, max(0, col - 1), line, col, insert, v)
        else:
            edit(doc, line, col, line, col, insert, v)
        fresh = Document("file:///b.py", doc.text, 0, "python")
        assert str(doc.tree.root_node) == str(fresh.tree.root_node)


def test_keystrokes_defer_the_parse_and_a_burst_parses_once_incrementally():
    rng = random.Random(1)
    doc = Document("file:///a.py", "def f(x):\n    return x\n\n\nclass A:\n    pass\n", 1, "python")
    first = doc.tree
    for burst in range(10):
        for v in range(rng.randrange(1, 6)):      # typing under the debounce: no parse per keystroke
            line = rng.randrange(doc.line_count)
            col = rng.randrange(utf16_len(doc.line_text(line)) + 1)
            edit(doc, line, col, line, col, rng.choice(["y", "(", ")", "\n", ": ", "é"]), burst * 10 + v)
            assert doc._stale is True
        if burst == 4:                              # a full-text change inside a burst forces a full parse
            doc.apply_changes([TextChange(doc.text + "z = 1\n")], 999)
            assert doc._stale is False
        tree = doc.tree
        assert doc._stale is None and tree is not first
        assert str(tree.root_node) == str(Document("file:///b.py", doc.text, 0, "python").tree.root_node)
        first = tree


def test_fork_applies_one_edit_to_a_copy_and_leaves_the_document_untouched():
    text = "import os\n\ndef f(x):\n    y = \n    return [x, '中', y]\n"
    doc = Document("file:///a.py", text, 7, "python")
    before_tree, before_lines = str(doc.tree.root_node), list(doc.line_starts)
    at = text.index("y = ") + 4
    twin = doc.fork(at, at, "x * 2  # 😀\n    z = (x,\n         y)")
    assert twin.text == text[:at] + "x * 2  # 😀\n    z = (x,\n         y)" + text[at:]
    assert twin.version == 7 and twin.uri == doc.uri and twin.language == "python"
    assert doc.text == text and doc.line_starts == before_lines and str(doc.tree.root_node) == before_tree
    fresh = Document("file:///b.py", twin.text, 0, "python")
    assert twin.line_starts == fresh.line_starts
    assert str(twin.tree.root_node) == str(fresh.tree.root_node) != before_tree
    replaced = doc.fork(text.index("[x"), text.index("]\n") + 1, "x")   # a replace, as accepting a rest-of-line item
    assert replaced.text.endswith("    return x\n") and doc.text == text


def test_byte_and_index_round_trip_on_non_ascii_text():
    doc = Document("file:///a.py", "a = '😀'\nb = '中文'\n", 1, "python")
    for i in range(len(doc.text) + 1):
        assert doc.index_of_byte(doc.byte_offset(i)) == i


def test_unknown_language_has_no_tree_and_binary_is_flagged():
    doc = Document("file:///a.xyz", "hello\n", 1, "fortranish")
    assert doc.tree is None and not doc.binary
    assert Document("file:///b.bin", "ab\x00cd", 1, "").binary


def test_store_ignores_unknown_uris_and_orders_others_by_recency():
    store = DocumentStore()
    a = store.open("file:///a.py", "a = 1\n", 1, "python")
    b = store.open("file:///b.py", "b = 1\n", 1, "python")
    store.open("file:///c.js", "c = 1\n", 1, "javascript")
    assert store.change("file:///nope.py", [TextChange("x")], 2) is None
    store.change("file:///a.py", [TextChange("a = 2\n")], 2)
    cur = store.open("file:///cur.py", "", 1, "python")
    assert [d.uri for d in store.others(cur.uri, "python")] == [a.uri, b.uri]
    store.close(a.uri)
    assert store.get(a.uri) is None


def test_utf8_and_utf32_position_encodings_when_negotiated():
    text = "x = '😀中'\n"
    d8 = Document("file:///a.py", text, 1, "python", encoding="utf-8")
    d32 = Document("file:///a.py", text, 1, "python", encoding="utf-32")
    assert d8.offset_at(Pos(0, 9)) == text.index("中") and d8.position_at(text.index("'", 5)) == Pos(0, 12)
    assert d32.offset_at(Pos(0, 6)) == text.index("中")


def test_line_starts_after_random_edits_equal_a_fresh_scan_with_mixed_line_endings():
    rng = random.Random(7)
    doc = Document("file:///m.txt", "a\r\nb\rc\nd\r\n\r\ne", 1, "")
    pieces = ["\r", "\n", "\r\n", "x", "é", "", "\r\r\n", "yz\n"]
    for v in range(400):
        n = len(doc.text)
        a = rng.randrange(n + 1)
        b = min(n, a + rng.choice([0, 0, 1, 2, 3]))
        start, end = doc.position_at(a), doc.position_at(b)
        doc.apply_changes([TextChange(rng.choice(pieces), start, end)], v + 2)
        fresh = Document("file:///f.txt", doc.text, 0, "")
        assert doc.line_starts == fresh.line_starts, (v, repr(doc.text))
        assert doc._ascii is False or doc.text.isascii()
