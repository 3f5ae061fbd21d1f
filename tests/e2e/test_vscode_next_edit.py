"""Next edits in a real VS Code (code-server + Chromium, playwright-core) with the built .vsix and the real
coda-lsp + default model: a parameter renamed, the proposed edit drawn with decorations (old text struck
through, new text after it), Tab jumps to it, Tab applies it; the saved file has exactly that edit.
The bar is 0, so whatever the weak default model proposes is drawn: the checks are mechanical.
A screenshot is kept (CODA_SCREENSHOT_DIR copies it out, e.g. to docs/).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from e2e_support import SOURCE, tail
from test_vscode import run_in_code_server

pytestmark = pytest.mark.editor

LINE, COL, NEW = 6, 11, "items"   # `def scale(values, k):`: `values` starts at column 11


def test_vscode_next_edit_is_drawn_jumped_to_and_applied(tmp_path, workspace, editor_env, server_cmd):
    src = workspace / "example.py"
    src.write_text(SOURCE)
    settings = {"coda.serverPath": server_cmd[0], "coda.serverArgs": server_cmd[2:], "editor.inlineSuggest.enabled": False,
                "coda.nextEditMinConfidence": 0, "coda.nextEditDebounceMs": 0, "coda.threads": 1}
    result_file, shot = tmp_path / "result.json", tmp_path / "vscode-next-edit.png"
    drv = run_in_code_server(tmp_path, workspace, editor_env, settings, "vscode_next_edit.js",
                             [str(result_file), str(shot)],
                             dict(CODA_FILE=src.name, CODA_PATH=str(src), CODA_EDIT_LINE=str(LINE),
                                  CODA_EDIT_COL=str(COL), CODA_NEW=NEW))
    ext_log = "".join(tail(p, 3000) for p in tmp_path.glob("ud/logs/*/exthost*/coda-lsp.coda-lsp/CoDA.log"))
    diagnostics = (f"driver rc {drv.returncode}\n{drv.stderr[-2000:]}\nextension log:\n{ext_log}\ncode-server:\n"
                   f"{tail(tmp_path / 'code-server.log', 2000)}\nserver log:\n{tail(tmp_path / 'server.log')}")
    assert result_file.exists(), diagnostics
    res = json.loads(result_file.read_text())
    assert drv.returncode == 0 and not res.get("error"), f"{res.get('error')}\n{res.get('events')}\n{diagnostics}"
    if os.environ.get("CODA_SCREENSHOT_DIR") and shot.exists():
        shutil.copy(shot, Path(os.environ["CODA_SCREENSHOT_DIR"]) / shot.name)
    assert shot.exists() and shot.stat().st_size > 10_000

    edited = SOURCE.replace("def scale(values", f"def scale({NEW}", 1)
    drawn = res["drawn"]
    assert len(drawn["after"]) == 1, drawn
    new = drawn["after"][0].replace("\\", "")
    new = "" if new == "\u232b" else new
    old = "".join(drawn["struck"])
    after = res["file_after"]
    # the file is the edited text with exactly the drawn edit applied, somewhere outside the user's own edit
    spots = [p for p in range(len(edited) + 1)
             if edited[p:p + len(old)] == old and after == edited[:p] + new + edited[p + len(old):]]
    assert spots and after != edited, (drawn, after)
    own = edited.index(f"def scale({NEW}") + len("def scale(")
    assert any(not (p < own + len(NEW) and p + len(old) > own) for p in spots), "the user's own edit was proposed"
    # Tab from line 1 jumped to it (the status bar's cursor moved) and kept it drawn; the second Tab applied it
    assert res["cursor_before_jump"] != res["cursor_after_jump"], res
    line = edited[:spots[0]].count("\n") + 1
    col = spots[0] - (edited.rfind("\n", 0, spots[0]) + 1) + 1
    assert f"Ln {line}, Col {col}" in res["cursor_after_jump"], (res["cursor_after_jump"], line, col)
    assert res["drawn_after_jump"]["after"] == drawn["after"]
