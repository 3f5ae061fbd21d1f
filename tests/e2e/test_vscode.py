"""code-server (a real VS Code) + the built editors/vscode .vsix + the real coda-lsp with a tiny model,
driven in Debian's Chromium by playwright-core (vscode_driver.js).

Random weights write garbage, so the checks are mechanical: the status bar reaches "CoDA: ready",
ghost text appears after typing and changes while the server streams, Esc hides it and asking again
shows it again, Ctrl+Right accepts one word and Tab the rest, which together insert exactly the ghost
text on screen (read back from the saved file), and Fill Selection replaces the selected line.
A screenshot of the ghost text is kept (CODA_SCREENSHOT_DIR copies it out, e.g. to docs/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from e2e_support import E2E, EDITORS_CACHE, REPO, SOURCE, require, tail

pytestmark = pytest.mark.editor

CODE_SERVER = EDITORS_CACHE / "code-server" / "node_modules" / ".bin" / "code-server"
VSIX = REPO / "editors" / "vscode" / "coda-lsp.vsix"
PLAYWRIGHT = E2E / "node_modules" / "playwright-core"
LINE, TYPED, FILL_LINE = 2, " +", 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Poll code-server's /healthz until it answers (it is an HTTP server: there is no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"code-server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"code-server did not answer in {timeout} s:\n{tail(log)}")


def squash(text: str) -> str:
    """Compare screen text and file text without the editor's whitespace rendering (nbsp, tabs)."""
    return re.sub(r"\s+", "", text.replace("\u00a0", " "))


BASE_SETTINGS = {
    "editor.inlineSuggest.enabled": True, "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
    "editor.suggestOnTriggerCharacters": False, "editor.wordBasedSuggestions": "off",
    "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off", "update.mode": "none",
    "extensions.autoUpdate": False, "security.workspace.trust.enabled": False, "files.trimTrailingWhitespace": False,
    "files.insertFinalNewline": False, "files.autoSave": "off", "chat.disableAIFeatures": True,
    "workbench.secondarySideBar.defaultVisibility": "hidden", "workbench.tips.enabled": False,
    "window.customMenuBarAltFocus": False,   # Alt+] / Ctrl+Alt+Right must not move the focus to the menu bar
}


def run_in_code_server(tmp_path: Path, workspace: Path, editor_env: dict, settings: dict, driver: str,
                       driver_args: list[str], driver_env: dict) -> subprocess.CompletedProcess:
    """Install the .vsix into a fresh code-server profile, serve `workspace`, run a playwright driver on it."""
    code_server = require(CODE_SERVER, "code-server")
    require(VSIX, "the built extension editors/vscode/coda-lsp.vsix")
    require(PLAYWRIGHT, "playwright-core (tests/e2e/node_modules)")
    chromium = require(shutil.which("chromium") or "/usr/bin/chromium", "Debian chromium")
    node = require(shutil.which("node"), "node")
    ud, ext = tmp_path / "ud", tmp_path / "ext"
    (ud / "User").mkdir(parents=True)
    (ud / "User" / "settings.json").write_text(json.dumps(dict(BASE_SETTINGS, **settings), indent=1))
    common = ["--user-data-dir", str(ud), "--extensions-dir", str(ext)]
    inst = subprocess.run([str(code_server), *common, "--install-extension", str(VSIX)], env=editor_env,
                          capture_output=True, text=True, timeout=120)
    assert inst.returncode == 0 and "coda-lsp" in inst.stdout + inst.stderr, inst.stdout + inst.stderr
    port = free_port()
    cs_log = tmp_path / "code-server.log"
    with open(cs_log, "w") as log:
        proc = subprocess.Popen([str(code_server), "--bind-addr", f"127.0.0.1:{port}", "--auth", "none",
                                 "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                                 *common, str(workspace)], env=editor_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, cs_log)
        env = dict(editor_env, CHROMIUM=str(chromium), NODE_PATH=str(E2E / "node_modules"),
                   CODA_SETTINGS=str(ud / "User" / "settings.json"), **driver_env)
        return subprocess.run([str(node), str(E2E / driver), f"{url}/?folder={workspace}", *driver_args],
                              cwd=E2E, env=env, capture_output=True, text=True, timeout=400)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_vscode_ghost_text_tab_and_fill(tmp_path, workspace, editor_env, server_cmd, tiny_model_dir):
    src = workspace / "example.py"
    src.write_text(SOURCE)
    settings = {"coda.serverPath": server_cmd[0], "coda.serverArgs": server_cmd[2:],
                "coda.modelPath": str(tiny_model_dir), "coda.steps": 16, "coda.maxTokens": 16,
                "coda.debounceMs": 0, "coda.streaming": True,
                # random weights are unsure of every token: the confidence gate would hide everything
                "coda.minConfidence": 0, "coda.minShownConfidence": 0}
    result_file, shot = tmp_path / "result.json", tmp_path / "vscode-ghost-text.png"
    drv = run_in_code_server(tmp_path, workspace, editor_env, settings, "vscode_driver.js",
                             [str(result_file), str(shot)],
                             dict(CODA_FILE=src.name, CODA_PATH=str(src), CODA_LINE=str(LINE), CODA_TYPE=TYPED,
                                  CODA_FILL_LINE=str(FILL_LINE)))
    cs_log = tmp_path / "code-server.log"
    diagnostics = (f"driver rc {drv.returncode}\n{drv.stderr[-2000:]}\ncode-server:\n{tail(cs_log, 2000)}\n"
                   f"server log:\n{tail(tmp_path / 'server.log')}")
    assert result_file.exists(), diagnostics
    res = json.loads(result_file.read_text())
    assert drv.returncode == 0 and not res.get("error"), f"{res.get('error')}\n{res.get('events')}\n{diagnostics}"
    if os.environ.get("CODA_SCREENSHOT_DIR") and shot.exists():
        shutil.copy(shot, Path(os.environ["CODA_SCREENSHOT_DIR"]) / shot.name)

    # status bar: the extension started the server and the model loaded
    assert res["statuses"][0].endswith("CoDA: ready"), res["statuses"]
    assert res["status_final"].endswith("CoDA: ready"), res["status_final"]

    # ghost text appeared and changed while the server streamed its denoising steps
    ghosts = [g for g in res["ghosts"] if squash(g)]
    assert ghosts and squash(res["ghost_final"]), res["events"]
    assert len({squash(g) for g in ghosts}) >= 2, f"ghost text never changed while streaming: {ghosts}"
    assert shot.exists() and shot.stat().st_size > 10_000

    # Esc hid it; asking again (explicitly: several candidates, the greedy one first) showed the same text
    assert res["ghost_count_after_escape"] == 0
    assert squash(res["ghost_retriggered"]) == squash(res["ghost_final"]), (res["ghost_retriggered"], res["ghost_final"])
    # Alt+] showed another candidate; Ctrl+Right took one word of it and left the rest as ghost text
    cycled = squash(res["ghost_cycled"])
    assert cycled and cycled != squash(res["ghost_final"]), (res["ghost_cycled"], res["ghost_final"])
    rest = squash(res["ghost_after_word"])
    assert res["ghost_after_word"] != res["ghost_cycled"] and cycled.endswith(rest), (res["ghost_after_word"],
                                                                                     res["ghost_cycled"])

    # Ctrl+Right then Tab inserted exactly the cycled ghost text, at the end of the typed line
    typed = SOURCE.split("\n")
    typed[LINE - 1] += TYPED
    before = "\n".join(typed)
    offset = sum(len(line) + 1 for line in typed[:LINE - 1]) + len(typed[LINE - 1])
    after = res["file_after_accept"]
    assert after.startswith(before[:offset]) and after.endswith(before[offset:]), after
    inserted = after[offset:len(after) - len(before[offset:])]
    assert inserted.strip(), after
    assert squash(inserted) == cycled, (inserted, res["ghost_cycled"])
    # the accept ran the item's coda.accepted command: the local statistics hold it once
    stats_file = Path(editor_env["XDG_STATE_HOME"]) / "coda-lsp" / "stats.jsonl"
    rows = [json.loads(l) for l in stats_file.read_text().splitlines()] if stats_file.exists() else []
    assert len({r["id"] for r in rows}) == len(rows)
    assert [r["accepted_chars"] for r in rows if r["accepted_chars"]] == [len(inserted)], rows
    # ... and Ctrl+Right reported its word first (VS Code runs an item's command on a whole accept only)
    reports = re.findall(r"coda\.accepted (\S+) chars=(\S+)", (tmp_path / "server.log").read_text())
    word = [(sid, int(n)) for sid, n in reports if n != "all"]
    assert len(word) == 1 and 0 < word[0][1] < len(inserted), reports
    assert [sid for sid, n in reports if n == "all"] == [word[0][0]], reports   # the same item, then whole

    # Fill Selection replaced line FILL_LINE and nothing else
    old = after.split("\n")
    fill_row = FILL_LINE - 1   # the driver selects this line of the document as it is after the accept
    new = res["file_after_fill"].split("\n")
    tail_len = len(old) - fill_row - 1
    assert new[:fill_row] == old[:fill_row]
    assert new[len(new) - tail_len:] == old[fill_row + 1:]
    assert "\n".join(new[fill_row:len(new) - tail_len]) != old[fill_row]


@pytest.mark.parametrize("case", ["missing", "crash"])
def test_vscode_bad_server_gives_one_clear_error_and_no_restart_loop(tmp_path, workspace, editor_env, case):
    starts = tmp_path / "starts.log"
    crash = tmp_path / "crash-server"
    crash.write_text(f"#!/bin/sh\necho start >> {starts}\necho 'coda-lsp: boom' >&2\nexit 3\n")
    crash.chmod(0o755)
    server, expect = {"missing": ("/nonexistent/bin/coda-lsp", "does not exist"),
                      "crash": (str(crash), "did not start")}[case]
    result_file = tmp_path / "bad.json"
    drv = run_in_code_server(tmp_path, workspace, editor_env, {"coda.serverPath": server},
                             "vscode_bad_input.js", [str(result_file)], {"CODA_EXPECT": expect})
    assert result_file.exists(), drv.stderr[-3000:]
    res = json.loads(result_file.read_text())
    assert drv.returncode == 0 and not res.get("error"), f"{res.get('error')}\n{res.get('events')}"
    # one notification of ours (vscode-languageclient adds its own generic "couldn't create connection")
    ours = [m for m in res["messages"] if m.startswith("CoDA: ")]
    assert len(ours) == 1, res["messages"]
    message = ours[0]
    assert re.search(expect, message), message
    if case == "missing":
        assert "/nonexistent/bin/coda-lsp" in message and "coda.serverPath" in message
    else:
        assert "did not start" in message and "terminal" in message and "Restart Server" in message
        assert starts.read_text().count("start") == 1         # started once: no restart loop


def test_vscode_restarts_a_server_that_crashes_later_once(tmp_path, workspace, editor_env, server_cmd, tiny_model_dir):
    """A server that dies after running a while is restarted after a back-off, and the status bar says so."""
    starts = tmp_path / "starts.log"
    flaky = tmp_path / "flaky-server"
    # the first run is killed 20 s after it starts (the extension treats deaths in the first 15 s as a
    # failed start); exec keeps the pid, so `kill $$` hits the real server
    flaky.write_text(f"#!/bin/sh\necho start >> {starts}\n"
                     f"if [ $(wc -l < {starts}) -eq 1 ]; then (sleep 20; kill -9 $$) & fi\n"
                     f"exec {server_cmd[0]} \"$@\"\n")
    flaky.chmod(0o755)
    (workspace / "example.py").write_text(SOURCE)
    result_file = tmp_path / "restart.json"
    drv = run_in_code_server(tmp_path, workspace, editor_env,
                             {"coda.serverPath": str(flaky), "coda.serverArgs": server_cmd[2:],
                              "coda.modelPath": str(tiny_model_dir), "workbench.editor.restoreViewState": False},
                             "vscode_bad_input.js", [str(result_file)], {"CODA_MODE": "restart"})
    assert result_file.exists(), drv.stderr[-3000:]
    res = json.loads(result_file.read_text())
    assert drv.returncode == 0 and not res.get("error"), f"{res.get('error')}\n{res.get('events')}"
    statuses = [s.split("CoDA: ", 1)[-1] for s in res["statuses"]]
    first_ready = statuses.index("ready")
    assert "ready" in statuses[first_ready + 1:] and any(s != "ready" for s in statuses[first_ready + 1:]), statuses
    assert starts.read_text().count("start") == 2       # restarted once, not looping
    assert not [m for m in res["messages"] if m.startswith("CoDA: ")], res["messages"]   # no error toast
