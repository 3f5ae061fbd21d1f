"""Local acceptance statistics: one outcome per suggestion, the `stats` summary, bad files never break anything."""

from __future__ import annotations

import json
import logging
import os

import pytest

from coda_lsp.cli import main as cli_main
from coda_lsp.stats import StatsLog, StatsRecorder, summarize


def recorder(tmp_path, mode="on", max_bytes=1_000_000) -> StatsRecorder:
    return StatsRecorder(StatsLog(tmp_path / "state" / "stats.jsonl", max_bytes=max_bytes), mode=mode)


def rows(path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_accepted_partial_and_dismissed_are_each_recorded_once(tmp_path):
    rec = recorder(tmp_path)
    meta = dict(latency_ms=40.0, model="tiny", settings="minConfidence=0.3")
    [a] = rec.show("file:///a.py", ["return a + b"], **meta)
    assert rec.accepted(a) is True
    [p] = rec.show("file:///a.py", ["print(total)"], **meta)
    assert rec.accepted(p, 5) and rec.accepted(p, 1)                 # next word, then one more char
    # typing what is shown continues the same suggestion (type-through), it does not end it
    assert rec.show("file:///a.py", ["total)"], type_through=True, **meta) == [p]
    [d] = rec.show("file:///a.py", ["x = 1"], **meta)               # a new suggestion: `p` ends as partial
    [other] = rec.show("file:///b.py", ["y = 2"], **meta)           # another document does not end `d`
    rec.close()                                                      # the server stops: `d` was dismissed
    got = {r["id"] + ".0": r for r in rows(rec.log_file.path)}
    assert len(got) == 4 and len(rows(rec.log_file.path)) == 4
    assert got[a]["outcome"] == "accepted" and got[a]["accepted_chars"] == len("return a + b")
    assert got[p]["outcome"] == "partial" and got[p]["accepted_chars"] == 6
    assert got[d]["outcome"] == "dismissed" and got[d]["accepted_chars"] == 0
    assert got[other]["outcome"] == "dismissed"
    assert all("text" not in r for r in got.values())                # no code unless opted in
    assert got[a]["model"] == "tiny" and got[a]["latency_ms"] == 40.0
    assert rec.accepted(a) is False                                  # an id ends once


def test_candidates_of_one_result_are_one_suggestion(tmp_path):
    rec = recorder(tmp_path)
    ids = rec.show("u", ["first", "second one"], latency_ms=5, model="m", settings="s")
    assert len(set(ids)) == 2
    assert rec.accepted(ids[1], 3)                                    # a word of the cycled-to candidate
    assert rec.show("u", ["ond one"], type_through=True, latency_ms=1, model="m", settings="s") == [ids[1]]
    assert rec.accepted(ids[1])                                       # the rest
    [row] = rows(rec.log_file.path)
    assert row["outcome"] == "accepted" and row["chars"] == len("second one") and row["candidates"] == 2


def test_code_is_kept_only_when_opted_in_and_off_writes_nothing(tmp_path):
    rec = recorder(tmp_path, mode="code")
    [i] = rec.show("u", ["secret()"], latency_ms=1, model="m", settings="s")
    rec.accepted(i)
    assert rows(rec.log_file.path)[0]["text"] == "secret()"
    off = recorder(tmp_path / "off", mode="off")
    [j] = off.show("u", ["x"], latency_ms=1, model="m", settings="s")
    assert off.accepted(j) is False
    off.close()
    assert not off.log_file.path.exists()


def test_stats_command_prints_the_rates(tmp_path, capsys):
    rec = recorder(tmp_path)
    meta = dict(model="default_model", settings="minConfidence=0.3")
    for i, (outcome, latency) in enumerate([("a", 10), ("a", 20), ("p", 30), ("d", 40)]):
        [sid] = rec.show(f"u{i}", ["abcdefghij"], latency_ms=latency, **meta)
        if outcome == "a":
            rec.accepted(sid)
        elif outcome == "p":
            rec.accepted(sid, 4)
    rec.show("v", ["zz"], latency_ms=100, model="other", settings="off")
    rec.close()
    [s, _] = sorted(summarize(rec.log_file.read()), key=lambda r: r["model"])
    assert s["shown"] == 4 and s["accept_rate"] == 0.5 and s["partial_rate"] == 0.25
    assert s["accepted_chars_per_shown"] == (10 + 10 + 4 + 0) / 4 and s["p50_ms"] in (20, 30) and s["p95_ms"] == 40
    assert cli_main(["stats", "--file", str(rec.log_file.path)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("default_model"))
    assert "50.0%" in line and "25.0%" in line and "6.00" in line
    assert cli_main(["stats", "--file", str(rec.log_file.path), "--since", "0.00001"]) == 0
    assert cli_main(["stats", "--file", str(tmp_path / "none.jsonl")]) == 0
    assert "no suggestions recorded" in capsys.readouterr().out


def test_stats_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rec = recorder(tmp_path)
    [i] = rec.show("u", ["abc"], latency_ms=1, model="m", settings="s")
    rec.accepted(i)
    out = tmp_path / "accept.png"
    assert cli_main(["stats", "--file", str(rec.log_file.path), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_file_is_skipped_with_one_log_line(tmp_path, caplog):
    rec = recorder(tmp_path)
    [i] = rec.show("u", ["abc"], latency_ms=1, model="m", settings="s")
    rec.accepted(i)
    with open(rec.log_file.path, "a") as f:
        f.write("{not json\n\x00\x00garbage\n[1, 2]\n")
    [j] = rec.show("u", ["def"], latency_ms=1, model="m", settings="s")
    rec.accepted(j)                                  # appending after the garbage still works
    with caplog.at_level(logging.WARNING, logger="coda_lsp.stats"):
        got = rec.log_file.read()
    assert [r["id"] + ".0" for r in got] == [i, j]
    assert len(caplog.records) == 1 and "3 corrupt" in caplog.records[0].getMessage()


def test_unwritable_file_costs_one_log_line_and_nothing_else(tmp_path, caplog):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    rec = recorder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="coda_lsp.stats"):
        for _ in range(3):
            [i] = rec.show("u", ["abc"], latency_ms=1, model="m", settings="s")
            assert rec.accepted(i) is True
    assert len(caplog.records) == 1 and "statistics off" in caplog.records[0].getMessage()


def test_rotation_keeps_one_old_file_and_reads_both(tmp_path):
    rec = recorder(tmp_path, max_bytes=400)
    ids = []
    for _ in range(12):
        [i] = rec.show("u", ["abc"], latency_ms=1, model="m", settings="s")
        rec.accepted(i)
        ids.append(i)
    path = rec.log_file.path
    old = path.with_name(path.name + ".1")
    assert old.exists() and os.path.getsize(path) < 400 + 300
    got = [r["id"] + ".0" for r in rec.log_file.read()]
    assert got == ids[-len(got):] and len(got) < 12   # the oldest were rotated away, order kept


def test_an_accept_begun_before_a_new_result_arrived_counts_for_the_suggestion_shown(tmp_path):
    """The race of a partial accept and a completion landing: one suggestion with both parts, not two."""
    rec = recorder(tmp_path)
    meta = dict(latency_ms=1, model="m", settings="s")
    [a] = rec.show("u", ["total = a + b"], **meta)
    assert rec.accepted(a, 6)                              # a word of what is shown
    [b] = rec.show("u", ["x = 1"], **meta)                 # a result lands while the next accept is on its way
    assert rec.accepted(a, 4)                              # the accept reports against what was shown: counts
    [c] = rec.show("u", ["y"], **meta)                     # the next result: `a` ends, with both parts
    assert rec.accepted(a) is False and rec.accepted(c)    # ... once; accepting `c` decides `b` (dismissed)
    got = {r["id"] + ".0": r for r in rows(rec.log_file.path)}
    assert got[a]["accepted_chars"] == 10 and got[a]["outcome"] == "partial"
    assert got[b]["outcome"] == "dismissed" and got[c]["outcome"] == "accepted" and len(got) == 3
