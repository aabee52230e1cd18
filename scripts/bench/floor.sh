#!/bin/bash
# usage: floor.sh RAFTKV_BIN [ROUNDS]: 1-client durable puts, interleaved, against etcd, raftkv and
# the commit floor (crates/raftkv/examples/commit_floor.rs: the least a replicated durable put
# costs here). Prints "system ops/s p50_us p99_us" per run. Both clusters get 100,000 keys first.
# Env: KVLOAD (../shared/tools/kvload), DUR (seconds per run, default 10), WORK (scratch dir).
set -u
BIN=$1; ROUNDS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
K=${KVLOAD:-/tmp/kvload-target/release/kvload}
WORK=${WORK:-/tmp/raftkv-floor}
ETCD_SH=$HERE/../../../shared/tools/kvload/etcd-cluster.sh
FLOOR=$HERE/../../target/release/examples/commit_floor
[ -x "$FLOOR" ] || { echo "build it: cargo build --release -p raftkv --example commit_floor" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
"$ETCD_SH" start "$WORK/etcd" >/dev/null
ETCD_LEADER=$(ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 \
  endpoint status -w json | python3 -c 'import json,sys; print([x["Endpoint"] for x in json.load(sys.stdin) if x["Status"]["leader"]==x["Status"]["header"]["member_id"]][0])')
RKV_PORT=$("$HERE/cluster.sh" "$BIN" "$WORK/raftkv")
"$FLOOR" serve "$WORK/floor" >/dev/null & FLOOR_PID=$!
cleanup() {
  kill $FLOOR_PID 2>/dev/null; pkill -f "commit_floor (leader|follower|single)"
  kill $(cat "$WORK/raftkv/pids") 2>/dev/null; "$ETCD_SH" stop "$WORK/etcd" >/dev/null 2>&1
}
trap cleanup EXIT
sleep 3
"$K" --target etcd --endpoints "$ETCD_LEADER" --op get --preload --clients 64 --duration 1 >/dev/null 2>&1
"$K" --target resp --addr 127.0.0.1:$RKV_PORT --op get --preload --clients 64 --duration 1 >/dev/null 2>&1
one() { # NAME TARGET ADDRESS-FLAG ADDRESS
  "$K" --target $2 $3 $4 --op put --clients 1 --warmup 2 --duration ${DUR:-10} 2>/dev/null | tail -1 |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('$1', int(d['ops_per_s']), int(d['p50_us']), int(d['p99_us']), 'errors', d['errors'])"
}
for r in $(seq $ROUNDS); do
  echo "# round $r"
  one etcd etcd --endpoints "$ETCD_LEADER"
  one raftkv resp --addr 127.0.0.1:$RKV_PORT
  one floor-3-nodes resp --addr 127.0.0.1:7391
  one floor-3-nodes-leader-without-copy resp --addr 127.0.0.1:7395
  one floor-1-node resp --addr 127.0.0.1:7394
done
