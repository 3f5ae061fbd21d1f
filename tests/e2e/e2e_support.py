"""Helpers for the real-editor tests: where the editors are, and skip-or-fail when one is missing.

The editors are installed by `scripts/install_editors.sh` (run by `scripts/test.sh`). When one is
missing the test skips with the install command locally, and FAILS under CI=true, so CI can never
go green without having driven the real editor.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# where scripts/install_editors.sh puts code-server (same default as there)
EDITORS_CACHE = Path(os.environ.get("CODA_EDITORS_CACHE")
                     or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coda-lsp-editors")
INSTALL_HINT = "run `bash scripts/install_editors.sh` (it installs Neovim, code-server, Chromium, playwright-core)"
# The file both editors open: line 2 (`    total = a`) is completed, line 7 (`    out = [...]`) filled.
SOURCE = (
    "def add(a, b):\n"
    "    total = a\n"
    "    return total\n"
    "\n"
    "\n"
    "def scale(values, k):\n"
    "    out = [v * k for v in values]\n"
    "    return out\n"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path | str | None, what: str) -> Path:
    """The path when it exists; otherwise skip (locally) or fail (CI) saying how to install it."""
    if path is not None and Path(path).exists():
        return Path(path)
    msg = f"{what} not found ({path}): {INSTALL_HINT}"
    if in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def server_ready_or_fail() -> None:
    """The e2e tests need the real server with its engine; say which part is missing."""
    try:
        import coda_lsp.server  # noqa: F401
        import coda_model.engine  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the coda-lsp server cannot run ({exc}): the e2e tests drive the real server")



def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} not written)"


def which(name: str) -> str | None:
    return shutil.which(name)
