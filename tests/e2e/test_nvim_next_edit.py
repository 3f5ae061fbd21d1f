"""Next edits in headless Neovim (0.12 and 0.11) with editors/nvim and the real coda-lsp + default model.

The user renames a parameter with `ciw`; leaving insert mode sends coda/nextEdit; the answer is drawn
at its place (old text highlighted, new text inline); <Tab> jumps to it, <Tab> again applies it. The
bar is 0, so whatever the weak default model proposes is drawn: the checks are about mechanics (what
was drawn equals the server's edit, where the cursor went, the buffer and file after applying it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e_support import E2E, REPO, SOURCE, tail
from test_nvim import NVIMS, require

pytestmark = pytest.mark.editor

EDIT = (6, 10, "ciwitems<Esc>")   # line 6 `def scale(values, k):`, cursor on `values`


def utf16_to_byte(line: str, units: int) -> int:
    out, n = 0, 0
    for ch in line:
        if n >= units:
            break
        n += len(ch.encode("utf-16-le")) // 2
        out += len(ch.encode("utf-8"))
    return out


@pytest.mark.parametrize("version", ["0.12", "0.11"])
def test_nvim_next_edit_is_drawn_jumped_to_and_applied(tmp_path, workspace, editor_env, server_cmd, version):
    nvim = require(*NVIMS[version])
    src = workspace / "example.py"
    src.write_text(SOURCE)
    result_file = tmp_path / "result.json"
    html = tmp_path / "nvim-next-edit.html"
    env = dict(editor_env, CODA_PLUGIN_DIR=str(REPO / "editors" / "nvim"), CODA_CMD=json.dumps(server_cmd),
               CODA_RESULT=str(result_file), CODA_EDIT="%d,%d,%s" % EDIT, CODA_TOHTML=str(html))
    proc = subprocess.run([str(nvim), "--headless", "--clean", "-u", str(E2E / "nvim_next_edit.lua"), str(src)],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=150)
    assert result_file.exists(), f"nvim wrote no result (rc {proc.returncode}):\n{proc.stderr[-3000:]}\n" \
                                 f"{tail(tmp_path / 'server.log')}"
    res = json.loads(result_file.read_text())
    assert proc.returncode == 0 and res.get("exit") == 0, (res.get("error"), res.get("events"), proc.stderr[-2000:],
                                                           tail(tmp_path / "server.log"))
    assert res["nvim"].startswith(version)
    shots = os.environ.get("CODA_SCREENSHOT_DIR")
    if shots and html.exists() and shutil.which("chromium"):   # the drawn edit, rendered by :TOhtml
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=640,260",
                        f"--screenshot={Path(shots) / f'nvim-next-edit-{version}.png'}", html.as_uri()],
                       env=editor_env, capture_output=True, timeout=60)
    assert res["after_edit"] == SOURCE.rstrip("\n").replace("def scale(values", "def scale(items")

    # drawn at its place: the old range highlighted (when it replaces text), the new text inline after it
    edit = res["edit"]
    lines = res["before_accept"].split("\n")
    s, e = edit["range"]["start"], edit["range"]["end"]
    srow, scol = s["line"], utf16_to_byte(lines[s["line"]], s["character"])
    erow, ecol = e["line"], utf16_to_byte(lines[e["line"]], e["character"])
    inline = [m for m in res["marks"] if m["virt_text"]]
    assert len(inline) == 1 and (inline[0]["row"], inline[0]["col"]) == (erow, ecol)
    assert inline[0]["virt_text"] == (edit["text"].split("\n")[0] or "\u232b")
    old = [m for m in res["marks"] if m.get("hl") == "CodaNextEditOld"]
    assert [(m["row"], m["col"], m["end_row"], m["end_col"]) for m in old] == \
        ([(srow, scol, erow, ecol)] if (srow, scol) != (erow, ecol) else [])
    assert not (srow == EDIT[0] - 1 and scol < len("def scale(items") and ecol > len("def scale(")), \
        "the user's own edit was proposed"

    # <Tab> from elsewhere jumped to it (still shown), <Tab> on it applied exactly it
    assert res["cursor_after_jump"] == [srow + 1, scol] and res["shown_after_jump"] is True
    text = res["before_accept"]
    offset = lambda row, col: sum(len(x.encode()) + 1 for x in lines[:row]) + col   # noqa: E731
    raw = text.encode()
    expected = (raw[:offset(srow, scol)] + edit["text"].encode() + raw[offset(erow, ecol):]).decode()
    assert res["after_accept"] == expected and res["shown_after_accept"] is False
    assert src.read_text().rstrip("\n") == expected.rstrip("\n")
