#!/usr/bin/env bash
# Create .venv-xla: torch 2.9.0 + torch_xla 2.9.0 from PyPI and this project (editable), for the torch_xla
# SPMD back end on XLA's CPU devices (PJRT_DEVICE=CPU). Idempotent: a second run only checks and reports.
# Separate from .venv because torch_xla pins its torch (the project's .venv uses torch 2.13.0); on x86_64
# PyPI's torch 2.9.0 is the CUDA build (several GB of nvidia-* wheels), which runs on the CPU all the same.
# Usage: bash scripts/xla_env.sh        (then: bash scripts/test_xla.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${CODA_XLA_TORCH:-2.9.0}"
TORCH_XLA_VERSION="${CODA_XLA_VERSION:-2.9.0}"
env_dir=.venv-xla
py="$env_dir/bin/python"
start=$(date +%s)
if [ ! -x "$py" ]; then
  python3 -m venv "$env_dir"
fi
pip_q() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
installed() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
if [ "$(installed torch)" != "$TORCH_VERSION" ] || [ "$(installed torch_xla)" != "$TORCH_XLA_VERSION" ]; then
  pip_q "pip>=23"
  pip_q "torch==$TORCH_VERSION" "torch_xla==$TORCH_XLA_VERSION"
fi
if ! "$py" -c "import coda_train, coda_model, pytest, pytest_asyncio, matplotlib" 2>/dev/null; then
  # the project's own dependencies (torch is already satisfied, so pip keeps 2.9.0) plus pytest
  # (pytest-asyncio only because pyproject's pytest options name it)
  pip_q -e ".[train]" "pytest>=8" "pytest-asyncio>=0.23"
fi
echo "torch $(installed torch), torch_xla $(installed torch_xla)"
size=$(du -sh "$env_dir" | cut -f1)
echo "$env_dir ready in $(( $(date +%s) - start )) s, $size on disk"
