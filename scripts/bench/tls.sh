#!/usr/bin/env bash
# usage: scripts/bench/tls.sh [ROUNDS] [SECONDS]: durable 3-node raftkv clusters, plain and
# secured (mutual TLS between the nodes; TLS and AUTH on the client port), measured by
# `raftkv bench --local` in interleaved rounds with the same load: set at 1, 16, 64 and 256
# clients, linearizable get at 1 and 64. Prints one markdown table per run; JSON in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-2}
SECONDS_PER_ROW=${2:-5}
OUT=${OUT:-/tmp/raftkv-tls-bench}
mkdir -p "$OUT"
cargo build --release --locked -q -p raftkv
BIN=target/release/raftkv
run() { # run LABEL [FLAGS...]
    local label=$1; shift
    for mode in "set:1,16,64,256" "get:1,64"; do
        local preload=()
        [[ ${mode%%:*} == get ]] && preload=(--preload)
        "$BIN" bench --local "$@" --mode "${mode%%:*}" --clients "${mode#*:}" "${preload[@]}" \
            --duration "$SECONDS_PER_ROW" --warmup 1 --label "$label" \
            --json "$OUT/$label-${mode%%:*}-round$round.json" 2>/dev/null
    done
}
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: plain"
    run plain
    echo "== round $round: tls"
    run tls --secure
done
