#!/usr/bin/env bash
# The test command: unit, property and harness tests, then every scenario against its golden trace
# and generated docs.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --locked
cargo run --locked -q -p raftsim -- check
