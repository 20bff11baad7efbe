#!/usr/bin/env bash
# The test command: every unit and integration test of the workspace. Integration tests start
# ringway in-process under both io drivers (io_uring and epoll), real HTTP/2 gRPC backends and
# raw HTTP/1.1 clients, all on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
