#!/usr/bin/env bash
# Set up everything the tests need (Python env, editors for the end-to-end tests) and run them.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
if [ -f scripts/install_editors.sh ] && [ "${CODA_SKIP_EDITORS:-0}" != "1" ]; then
  bash scripts/install_editors.sh
fi
exec .venv/bin/python -m pytest -q "$@"
