#!/usr/bin/env bash
# The test command: unit, property, harness, storage, runtime and server tests; every scenario
# against its golden trace and generated docs; the randomized simulator's mutation check (known
# protocol bugs must be caught), the runtime's (its scenarios must catch the runtime's and the
# core's defects put back) and a bounded batch of random seeds.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --locked
# Values up to the default 64 MiB command limit, in a release build as users run it.
cargo test --release --locked -q -p raftkv --test large_values
cargo run --locked -q -p raftsim -- check
cargo test --release --locked -q -p raftsim --features mutations --test mutations
cargo test --locked -q -p raftnet --features mutations --test mutations
cargo run --release --locked -q -p raftsim -- fuzz --seeds 300 --quiet
cargo run --release --locked -q -p raftsim -- fuzz --seeds 100 --nodes 5 --quiet
