"""Fixtures for the real-editor tests: a hermetic HOME, a workspace, the real server command."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from e2e_support import VENV_BIN, require, server_ready_or_fail


@pytest.fixture
def editor_env(tmp_path: Path):
    """Environment with HOME and XDG dirs inside tmp_path: editors and browsers write there, not to ~.

    TMPDIR and XDG_RUNTIME_DIR get a short path of their own: Chromium and VS Code put unix sockets
    there, and a socket path longer than 107 bytes aborts Chromium ("Socket path too long").
    """
    home = tmp_path / "home"
    short = Path(tempfile.mkdtemp(prefix="coda-e2e-"))
    env = dict(os.environ)
    for name, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                      ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache")):
        d = home / sub if sub else home
        d.mkdir(parents=True, exist_ok=True)
        env[name] = str(d)
    for name, sub in (("TMPDIR", "t"), ("XDG_RUNTIME_DIR", "r")):
        (short / sub).mkdir(mode=0o700)
        env[name] = str(short / sub)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    yield env
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def server_cmd(tmp_path: Path) -> list[str]:
    """The real language server, with its log in tmp_path (printed when a test fails)."""
    server_ready_or_fail()
    exe = require(VENV_BIN / "coda-lsp", "the coda-lsp console script (pip install -e .)")
    return [str(exe), "--stdio", "--log-file", str(tmp_path / "server.log"),
            "--log-level", "DEBUG"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return ws
