#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, on a fresh Debian machine that has only
# Rust, gcc, Python and Node. Idempotent and quick when everything is already there: each step
# checks before it installs. Run from anywhere; .ci/run calls it before the tests.
#
# What it installs, and where the tests look for it:
# - Python packages in a virtualenv at .venv-test/ (gitignored). Tests find its interpreter
#   through ringway_load::clients::python(): $RINGWAY_TEST_PYTHON if set, else
#   .venv-test/bin/python. Used by tests/clients/grpcio_client.py (the real grpcio client).
# - npm packages in tests/clients/node_modules (gitignored), exactly as tests/clients/
#   package-lock.json pins them (`npm ci`), then the code generated from tests/clients/proto/ into
#   tests/clients/gen/ (gitignored). Used by the Node and browser clients (tests/clients/README.md)
#   through tests/common/node.rs, which fails a test and names this script when they are missing.
# - Debian packages: chromium (/usr/bin/chromium), which tests/clients/browser.mjs drives through
#   playwright-core for tests/browser.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so every machine runs the same clients; bump deliberately.
PYTHON_PACKAGES=(
  "grpcio==1.85.3"
)
# The npm packages are pinned in tests/clients/package.json and package-lock.json (npm ci).
NPM_DIR=tests/clients
# Debian packages the tests run: chromium (browser tests), curl and openssl (HTTPS and h2c
# clients in tests/grpc_clients.rs and tests/tls.rs), nghttp2-client (h2load). chromium is
# skipped when /usr/bin/chromium exists already.
APT_PACKAGES=(
  chromium
  curl
  openssl
  nghttp2-client
)

VENV=.venv-test
PYTHON=${PYTHON:-python3}

say() { printf 'test-deps: %s\n' "$*"; }

install_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
  fi
  # pip freeze lists exactly what is installed; skip pip entirely when every pin is met.
  local installed missing=()
  installed=$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null || true)
  for package in "${PYTHON_PACKAGES[@]}"; do
    if ! grep -qixF "$package" <<<"$installed"; then
      missing+=("$package")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "python packages present: ${PYTHON_PACKAGES[*]}"
    return
  fi
  say "installing into $VENV: ${missing[*]}"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${missing[@]}"
}

install_npm() {
  if ! command -v npm >/dev/null; then
    say "npm not found: install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)"
    exit 1
  fi
  # npm ci writes node_modules/.package-lock.json; when it is newer than the committed lock file
  # the install is current. Install scripts are not needed: esbuild and buf find their platform
  # binaries through their optional dependencies.
  if [ "$NPM_DIR/node_modules/.package-lock.json" -nt "$NPM_DIR/package-lock.json" ]; then
    say "npm packages present ($NPM_DIR/node_modules)"
  else
    say "installing npm packages into $NPM_DIR/node_modules (npm ci)"
    (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
  # The generated code is rebuilt when a proto file, the template or the generator changed.
  local generated=$NPM_DIR/gen/test_pb.js
  if [ -f "$generated" ] && [ -z "$(find "$NPM_DIR/proto" "$NPM_DIR/buf.gen.yaml" \
    "$NPM_DIR/node_modules/.package-lock.json" -newer "$generated" -print -quit)" ]; then
    say "generated code present ($NPM_DIR/gen)"
  else
    say "generating $NPM_DIR/gen from $NPM_DIR/proto"
    rm -rf "$NPM_DIR/gen"
    (cd "$NPM_DIR" && npm run --silent generate)
  fi
}

install_apt() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    # A chromium installed some other way (a base image, by hand) is used as it is.
    [ "$package" = chromium ] && [ -x /usr/bin/chromium ] && continue
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && { say "debian packages present: ${APT_PACKAGES[*]}"; return; }
  say "installing debian packages: ${missing[*]}"
  # apt needs root: as another user, through sudo.
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

install_apt
install_python
install_npm
say "done"
