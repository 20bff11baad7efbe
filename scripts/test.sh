#!/usr/bin/env bash
# The test command: installs what the tests need beyond the Rust toolchain (the real clients
# they drive: scripts/test-deps.sh, quick when already installed), then runs every unit and
# integration test of the workspace. Integration tests start ringway in-process (and the real
# binary) under both io drivers, real HTTP/2 gRPC backends and real clients, all on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-deps.sh
cargo test --workspace --all-targets "$@"
