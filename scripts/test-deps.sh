#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, on a fresh Debian machine that has only
# Rust, gcc, Python and Node. Idempotent and quick when everything is already there: each step
# checks before it installs. Run from anywhere; .ci/run calls it before the tests.
#
# What it installs, and where the tests look for it:
# - Python packages in a virtualenv at .venv-test/ (gitignored). Tests find its interpreter
#   through ringway_load::clients::python(): $RINGWAY_TEST_PYTHON if set, else
#   .venv-test/bin/python. Used by tests/clients/grpcio_client.py (the real grpcio client).
# - npm packages: none yet (hook below; install into tests/clients/node_modules).
# - Debian packages: none yet (hook below).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned, so every machine runs the same clients; bump deliberately.
PYTHON_PACKAGES=(
  "grpcio==1.85.3"
)
# Hook: npm packages for the Node clients of later issues (e.g. "@connectrpc/connect-node@2.1.0").
NPM_PACKAGES=()
# Hook: Debian packages the tests run (e.g. chromium, nghttp2-client).
APT_PACKAGES=()

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
  [ ${#NPM_PACKAGES[@]} -eq 0 ] && return
  local dir=tests/clients
  local missing=()
  for package in "${NPM_PACKAGES[@]}"; do
    local name=${package%@*}
    [ -z "$name" ] && name=$package
    [ -d "$dir/node_modules/$name" ] || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && { say "npm packages present"; return; }
  say "installing npm packages: ${missing[*]}"
  (cd "$dir" && npm install --no-save --no-audit --no-fund "${missing[@]}")
}

install_apt() {
  [ ${#APT_PACKAGES[@]} -eq 0 ] && return
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && { say "debian packages present"; return; }
  say "installing debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

install_apt
install_python
install_npm
say "done"
