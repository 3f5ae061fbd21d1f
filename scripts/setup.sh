#!/usr/bin/env bash
# Create .venv and install coda-lsp into it (idempotent). Usage: bash scripts/setup.sh [extras]
# torch is pinned first to the CPU build that installs offline on the project machines; the package
# itself accepts any torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --disable-pip-version-check "pip>=23" 2>/dev/null || true
$py -c "import torch" 2>/dev/null || $py -m pip install -q --disable-pip-version-check torch==2.13.0
if [ -n "$extras" ]; then target=".[${extras}]"; else target="."; fi
$py -m pip install -q --disable-pip-version-check -e "$target"
