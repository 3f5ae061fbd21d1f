"""coda_lsp.http.hole_text: what a client sees of a row while it denoises (pure functions)."""

from __future__ import annotations

from coda_lsp.http.hole_text import apply_stops, finished_lines, settled_ids, visible_settled

STOP_IDS = {0}
M = True


def test_settled_ids_stop_at_the_first_mask_or_end_of_text() -> None:
    assert settled_ids([5, 6, 7], [False, False, M], STOP_IDS) == ([5, 6], False)
    assert settled_ids([5, 0, 7], [False, False, M], STOP_IDS) == ([5], True)
    assert settled_ids([5, 6], [M, False], STOP_IDS) == ([], False)


def test_stop_strings_cut_before_the_first_match() -> None:
    cut = apply_stops("a = 1\nb = 2\n\nc", ("\n\n", "b ="), 0, ended=True)
    assert (cut.text, cut.stop_type, cut.stopping_word) == ("a = 1\n", "word", "b =")
    assert apply_stops("x", (), 0, ended=False).stop_type == "limit"
    assert apply_stops("x", (), 0, ended=True).stop_type == "eos"


def test_n_indent_cuts_before_a_later_line_indented_less() -> None:
    text = "x += 1\n        y += 2\n    return x\n"
    assert apply_stops(text, (), 8, ended=False).text == "x += 1\n        y += 2\n"
    assert apply_stops("x\n\n        y", (), 8, ended=False).text == "x\n\n        y"   # blank lines do not count


def test_a_stream_holds_back_what_could_still_become_a_stop_or_a_dedent() -> None:
    assert visible_settled("abc\n", ("\n\n",), 0) == "abc"          # a second newline would complete the stop
    assert visible_settled("abc\n\nd", ("\n\n",), 0) == "abc"
    assert visible_settled("a\n    b", (), 4) == "a\n"             # the last line's indent may still grow
    assert visible_settled("abc", (), 0) == "abc"


def test_finished_lines_keep_whole_lines_only() -> None:
    assert finished_lines("a\nb\nc") == "a\nb\n" and finished_lines("abc") == ""
