#!/bin/bash
# usage: ab.sh RAFTKV_BIN CLIENTS...: a fresh cluster, then 5 s of kvload puts per client count;
# prints ops/s, p50/p99 µs and the servers' CPU µs per put. For A/B runs of two builds, alternate.
# KVLOAD: the kvload binary (../shared/tools/kvload).
BIN=$1; shift
DIR=${DIR:-/tmp/raftkv-ab}
KVLOAD=${KVLOAD:-/tmp/kvload-target/release/kvload}
P=$(dirname "$0")/cluster.sh
PORT=$("$P" "$BIN" "$DIR")
cpu() { local t=0; for p in $(cat "$DIR/pids"); do set -- $(cut -d' ' -f14,15 /proc/$p/stat); t=$((t+$1+$2)); done; echo $t; }
for c in "$@"; do
  "$KVLOAD" --target resp --addr 127.0.0.1:$PORT --op put --clients $c --warmup 1 --duration 1 >/dev/null 2>&1
  a=$(cpu); out=$("$KVLOAD" --target resp --addr 127.0.0.1:$PORT --op put --clients $c --warmup 0 --duration 5 2>&1 | tail -1); b=$(cpu)
  set -- $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["ops"], int(d["ops_per_s"]), int(d["p50_us"]), int(d["p99_us"]))')
  echo "$(basename "$BIN") c=$c ops/s=$2 p50=$3 p99=$4 cpu_us/op=$(( (b-a)*10000 / $1 ))"
done
kill $(cat "$DIR/pids"); rm -f "$DIR/pids"
