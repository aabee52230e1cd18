#!/usr/bin/env bash
# The long nemesis campaign behind the table in docs/reliability.md: several seeds of every
# fault kind on 3 and 5 nodes, each run checked. Needs root (iptables, tmpfs mounts) and the
# Debian packages iptables and faketime.
#
#   scripts/nemesis-long.sh [OUT_DIR] [SECONDS_PER_RUN] [SEEDS_3] [SEEDS_5]
#
# Defaults: target/raftchaos-long, 150 s, seeds 1..7 on 3 nodes and 1..6 on 5 nodes (about
# 36 minutes). Prints a Markdown table of the runs at the end (also OUT_DIR/table.md); exits
# non-zero if any run found a violation. BIN=DIR runs the binaries in DIR (raftchaos, raftkv,
# libfaultio.so) instead of building them, e.g. a copy that later builds do not replace.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/raftchaos-long}
secs=${2:-150}
seeds3=${3:-7}
seeds5=${4:-6}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p raftkv -p faultio -p raftchaos
  BIN=target/release
fi
mkdir -p "$out"
failed=0
run() {
  local nodes=$1 seed=$2 dir="$out/n$1-seed$2"
  rm -rf "$dir"
  echo "== $nodes nodes, seed $seed ($(date -u +%H:%M:%S))"
  if ! "$BIN/raftchaos" run --nodes "$nodes" --seed "$seed" --duration "$secs" \
      --report "$dir" --quiet | tail -3; then
    failed=1
  fi
}
for seed in $(seq 1 "$seeds3"); do run 3 "$seed"; done
for seed in $(seq 1 "$seeds5"); do run 5 "$seed"; done
python3 - "$out" <<'PY' | tee "$out/table.md"
import json, sys, pathlib
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("n*-seed*/summary.json")):
    s = json.loads(path.read_text())
    rows.append(s)
print("| nodes | seed | seconds | faults | operations | ok | failed | unknown | violations | recovery after a fault (p50 / max) | final recovery |")
print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|")
tot = {"s": 0, "f": 0, "ops": 0, "ok": 0, "fail": 0, "unk": 0, "v": 0}
for s in rows:
    faults = sum(s["faults"].values())
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(s["faults"].items()))
    rec = f'{s["fault_recovery_p50_ms"]} / {s["fault_recovery_max_ms"]} ms' if s["fault_recovery_max_ms"] is not None else "-"
    final = f'{s["recovery_ms"]} ms' if s["recovery_ms"] is not None else "none"
    print(f'| {s["nodes"]} | {s["seed"]} | {s["duration_s"]:.0f} | {faults}: {kinds} | {s["operations"]} | {s["ok"]} | {s["failed"]} | {s["unknown"]} | {len(s["violations"])} | {rec} | {final} |')
    tot["s"] += s["duration_s"]; tot["f"] += faults; tot["ops"] += s["operations"]
    tot["ok"] += s["ok"]; tot["fail"] += s["failed"]; tot["unk"] += s["unknown"]; tot["v"] += len(s["violations"])
print(f'| **all** | {len(rows)} runs | {tot["s"]:.0f} | {tot["f"]} | {tot["ops"]} | {tot["ok"]} | {tot["fail"]} | {tot["unk"]} | {tot["v"]} | | |')
PY
exit $failed
