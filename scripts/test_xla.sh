#!/usr/bin/env bash
# The torch_xla SPMD back end's tests (tests/xla) on 4 XLA CPU devices, in .venv-xla (made first by
# scripts/xla_env.sh; about 4-5 minutes and 7.4 GB the first time). .ci/run runs this after the main suite.
# Usage: bash scripts/test_xla.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/xla_env.sh
export PJRT_DEVICE=CPU CPU_NUM_DEVICES=4
# a private pytest temp root: pytest prunes old numbered dirs under /tmp/pytest-of-$USER at start, and other
# pytest sessions on a shared machine would prune this one's mid-run
tmp=$(mktemp -d -t coda-xla-tests.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
.venv-xla/bin/python -m pytest -q -p no:cacheprovider --basetemp "$tmp/t" tests/xla "$@"
