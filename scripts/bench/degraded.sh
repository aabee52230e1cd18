#!/usr/bin/env bash
# usage: scripts/bench/degraded.sh OUTDIR   (as root)
#
# raftkv and etcd on a degraded network: for each system and condition, a fresh 3-node cluster
# on 127.0.0.21-23, a leader, then 20 s of kvload puts against that leader while the peer links
# lose packets or carry added latency. Per row: ops/s, p50, p99, errors, elections (the rise of
# the highest raft term over the run, as the nodes answer it or, if higher, as they logged it:
# etcd's status misses members without a leader) and whether the first leader still leads at
# the end.
# Prints a Markdown table; appends one JSON line per row to OUTDIR/results.jsonl and keeps each
# row's node logs and kvload output under OUTDIR/logs/.
#
# Conditions (CONDITIONS, space-separated):
#   none       direct peer links
#   lossP      iptables drops P% of the TCP packets to and from the peer ports, at random, in
#              both directions (direct links, so P is the loss of every packet on a link)
#   latN       `raftchaos proxy` on every peer link: N ms one-way delay (so N*2 more round trip),
#              plus jitter uniform in 0..N/10 ms; the proxy is in place from the cluster's start
#   lat0       the proxy with no delay: what the proxy alone costs (not in the default list)
#
# Environment (defaults in brackets):
#   RAFTKV [target/release/raftkv]  RAFTCHAOS [target/release/raftchaos]   (cargo build --release
#     -p raftkv -p raftchaos)
#   KVLOAD [kvload on PATH]   (cargo build --release --manifest-path ../shared/tools/kvload/Cargo.toml)
#   SYSTEMS ["raftkv etcd"]  CONDITIONS ["none loss10 loss30 loss50 lat50 lat100 lat200"]
#   REPEAT [1] rounds of the whole matrix  DURATION [20] WARMUP [2] CLIENTS [16]
#   RAFTKV_FLAGS [""] extra `raftkv serve` flags, e.g. "--election-ms 1000..2000"
#   ETCD_FLAGS [""] extra etcd flags   LABEL [""] copied into each row
#   DATA_ROOT [/tmp] where each row's fresh data dirs go (fsync on; removed after the row)
#
# Uses only 127.0.0.21-23 (raftkv ports 6379 client, 7000 raft, 7100 proxied raft, 9000 admin;
# etcd 2379 client, 2380 peer, 2381 proxied peer) and its own iptables chain DEGRADED, hooked
# into INPUT on lo, whose rules match only those addresses. Everything it starts, the hook, the
# chain and the data dirs are removed on exit, also on an error or Ctrl-C.
set -euo pipefail

OUT=${1:?usage: $0 OUTDIR}
RAFTKV=${RAFTKV:-target/release/raftkv}
RAFTCHAOS=${RAFTCHAOS:-target/release/raftchaos}
KVLOAD=${KVLOAD:-$(command -v kvload || echo kvload)}
SYSTEMS=${SYSTEMS:-raftkv etcd}
CONDITIONS=${CONDITIONS:-none loss10 loss30 loss50 lat50 lat100 lat200}
REPEAT=${REPEAT:-1}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-16}
RAFTKV_FLAGS=${RAFTKV_FLAGS:-}
ETCD_FLAGS=${ETCD_FLAGS:-}
LABEL=${LABEL:-}
DATA_ROOT=${DATA_ROOT:-/tmp}
CHAIN=DEGRADED
IPS=(127.0.0.21 127.0.0.22 127.0.0.23)
NET=127.0.0.20/30 # .20-.23: the rules never touch another address
LEADER_WAIT_S=60

# ---- preflight -------------------------------------------------------------------------------

preflight() {
  local missing=()
  [ "$(id -u)" = 0 ] || missing+=("root (iptables needs it): run with sudo")
  [ -x "$RAFTKV" ] || missing+=("raftkv binary at RAFTKV=$RAFTKV (cargo build --release -p raftkv)")
  [ -x "$RAFTCHAOS" ] || missing+=("raftchaos binary at RAFTCHAOS=$RAFTCHAOS (cargo build --release -p raftchaos)")
  [ -x "$KVLOAD" ] || missing+=("kvload at KVLOAD=$KVLOAD (cargo build --release --manifest-path ../shared/tools/kvload/Cargo.toml; needs protobuf-compiler)")
  local tool
  for tool in iptables python3 ss timeout; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  case " $SYSTEMS " in *" raftkv "*) command -v redis-cli >/dev/null || missing+=("redis-cli (apt-get install -y redis-tools)") ;; esac
  case " $SYSTEMS " in *" etcd "*)
    command -v etcd >/dev/null || missing+=("etcd (apt-get install -y etcd-server)")
    command -v etcdctl >/dev/null || missing+=("etcdctl (apt-get install -y etcd-client)") ;;
  esac
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'degraded.sh: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
  if iptables -w -n -L "$CHAIN" >/dev/null 2>&1; then
    echo "degraded.sh: iptables chain $CHAIN exists (a run that was killed?). Remove it with:" >&2
    echo "  iptables -w -D INPUT -i lo -j $CHAIN; iptables -w -F $CHAIN; iptables -w -X $CHAIN" >&2
    exit 1
  fi
  local busy
  busy=$(ss -Htln | awk '{print $4}' | grep -E '^127\.0\.0\.2[123]:(6379|7000|7100|9000|2379|2380|2381)$' || true)
  if [ -n "$busy" ]; then
    echo "degraded.sh: ports of 127.0.0.21-23 are in use (stale nodes?):" >&2
    echo "$busy" | sort -u | head >&2
    exit 1
  fi
  local cond
  for cond in $CONDITIONS; do
    [[ $cond =~ ^(none|loss[0-9]+|lat[0-9]+)$ ]] || { echo "degraded.sh: unknown condition $cond" >&2; exit 2; }
  done
}

# ---- cleanup ---------------------------------------------------------------------------------

PIDS=()     # everything this script started and has not stopped yet
DATA_DIR="" # the current row's data dirs
HOOKED=0
ROWS=""     # the rows of this invocation, for the table

stop_pids() {
  local p alive
  [ ${#PIDS[@]} -gt 0 ] || return 0
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  for _ in $(seq 100); do
    alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  kill -KILL "${PIDS[@]}" 2>/dev/null || true
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

unhook() {
  if [ $HOOKED = 1 ]; then
    iptables -w -D INPUT -i lo -j "$CHAIN" 2>/dev/null || true
    iptables -w -F "$CHAIN" 2>/dev/null || true
    iptables -w -X "$CHAIN" 2>/dev/null || true
    HOOKED=0
  fi
}

cleanup() {
  unhook
  stop_pids
  if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
  if [ -n "$ROWS" ]; then rm -f "$ROWS"; ROWS=""; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- conditions ------------------------------------------------------------------------------

# apply_loss PERCENT PORT...: drop that share of the TCP packets to and from the ports on our
# addresses only (destination for --dport, source for --sport), in a chain of our own.
apply_loss() {
  local pct=$1; shift
  local p port
  p=$(python3 -c "print($pct / 100)")
  iptables -w -N "$CHAIN"
  HOOKED=1
  for port in "$@"; do
    iptables -w -A "$CHAIN" -p tcp -d "$NET" --dport "$port" -m statistic --mode random --probability "$p" -j DROP
    iptables -w -A "$CHAIN" -p tcp -s "$NET" --sport "$port" -m statistic --mode random --probability "$p" -j DROP
  done
  iptables -w -I INPUT -i lo -j "$CHAIN"
}

# start_proxy LATENCY_MS LOGDIR LISTEN_PORT UPSTREAM_PORT: one route per node.
start_proxy() {
  local ms=$1 log=$2 listen=$3 upstream=$4 routes=() ip
  for ip in "${IPS[@]}"; do routes+=(--route "$ip:$listen=$ip:$upstream"); done
  "$RAFTCHAOS" proxy "${routes[@]}" --latency-ms "$ms" --jitter-ms $((ms / 10)) >"$log/proxy.log" 2>&1 &
  PIDS+=($!)
  sleep 0.3
  if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
    echo "degraded.sh: the proxy did not start:" >&2
    cat "$log/proxy.log" >&2
    exit 1
  fi
}

# ---- raftkv ----------------------------------------------------------------------------------

raftkv_start() { # DATA LOGDIR RAFT_ADVERTISED_PORT
  local data=$1 log=$2 adv=$3 i nodes=() flags
  for i in 1 2 3; do nodes+=(--node "$i=${IPS[i-1]}:$adv,${IPS[i-1]}:6379"); done
  read -r -a flags <<<"$RAFTKV_FLAGS"
  for i in 1 2 3; do
    "$RAFTKV" serve --id $i "${nodes[@]}" --data-dir "$data/n$i" --raft-listen "${IPS[i-1]}:7000" \
      --peer-source-ip "${IPS[i-1]}" --admin "${IPS[i-1]}:9000" "${flags[@]}" >"$log/n$i.log" 2>&1 &
    PIDS+=($!)
  done
}

# raftkv_state: "MAX_TERM LEADER_ID" (leader 0 if no node says it leads), from INFO on each node.
raftkv_state() {
  local i max=0 leader=0 info role term
  for i in 1 2 3; do
    info=$(timeout 2 redis-cli -h "${IPS[i-1]}" -p 6379 INFO 2>/dev/null | tr -d '\r') || continue
    role=$(sed -n 's/^role://p' <<<"$info")
    term=$(sed -n 's/^raft_term://p' <<<"$info")
    [ -n "$term" ] || continue
    [ "$term" -gt "$max" ] && max=$term
    [ "$role" = leader ] && leader=$i
  done
  echo "$max $leader"
}

# ---- etcd ------------------------------------------------------------------------------------

ETCD_ENDPOINTS=127.0.0.21:2379,127.0.0.22:2379,127.0.0.23:2379

etcd_start() { # DATA LOGDIR PEER_ADVERTISED_PORT
  local data=$1 log=$2 adv=$3 i cluster="" flags
  for i in 1 2 3; do cluster+="${cluster:+,}m$i=http://${IPS[i-1]}:$adv"; done
  read -r -a flags <<<"$ETCD_FLAGS"
  for i in 1 2 3; do
    etcd --name "m$i" --data-dir "$data/m$i.etcd" \
      --listen-client-urls "http://${IPS[i-1]}:2379" --advertise-client-urls "http://${IPS[i-1]}:2379" \
      --listen-peer-urls "http://${IPS[i-1]}:2380" --initial-advertise-peer-urls "http://${IPS[i-1]}:$adv" \
      --initial-cluster "$cluster" --initial-cluster-token degraded --initial-cluster-state new \
      --logger zap --log-outputs "$log/n$i.log" "${flags[@]}" >"$log/n$i.out" 2>&1 </dev/null &
    PIDS+=($!)
  done
}

# etcd_state: "MAX_TERM LEADER_INDEX" (1-3; 0 if no member names a leader that answered).
etcd_state() {
  local json
  json=$(ETCDCTL_API=3 timeout 5 etcdctl --endpoints "$ETCD_ENDPOINTS" --dial-timeout 1s \
    --command-timeout 2s endpoint status -w json 2>/dev/null || true)
  python3 -c '
import json, sys
try:
    rows = json.load(sys.stdin)
except Exception:
    rows = []
ips = sys.argv[1:]
best, leader = 0, 0
for r in rows:
    s = r.get("Status", {})
    term = s.get("raft_term", s.get("header", {}).get("raft_term", 0))
    best = max(best, term)
    if s.get("leader") and s.get("leader") == s.get("header", {}).get("member_id"):
        host = r["Endpoint"].split("//")[-1].split(":")[0]
        leader = ips.index(host) + 1 if host in ips else 0
print(best, leader)' "${IPS[@]}" <<<"$json"
}

# ---- one row ---------------------------------------------------------------------------------

# log_counts SYSTEM LOGDIR OFFSETS...: events in the node logs after the given byte offsets.
log_counts() {
  local system=$1 log=$2; shift 2
  python3 - "$system" "$log" "$@" <<'EOF'
import json, re, sys
system, log, offsets = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
patterns = {
    "raftkv": {"conn_lost": "connection to peer lost", "became_leader": "role: leader",
               "became_precandidate": "role: pre-candidate", "became_candidate": "role: candidate"},
    "etcd": {"conn_lost": "lost TCP streaming connection", "became_leader": "became leader",
             "became_precandidate": "became pre-candidate", "became_candidate": "became candidate",
             "quorum_stepdown": "quorum is not active"},
}[system]
counts = {k: 0 for k in patterns}
stepdowns = 0  # raftkv: leader -> follower at the same term (check-quorum)
# The highest term any node logged: etcd's status misses members that have no leader.
max_term = 0
term_re = re.compile(r"role: \S+ term=(\d+)" if system == "raftkv" else r"at term (\d+)")
for i, off in enumerate(offsets, start=1):
    try:
        with open(f"{log}/n{i}.log", "rb") as f:
            data = f.read()
    except OSError:
        continue
    # The role before the run, so that a step-down of the first leader counts too.
    last = None
    for line in data[:off].decode(errors="replace").splitlines():
        m = re.search(r"role: (\S+) term=(\d+)", line) if system == "raftkv" else None
        if m:
            last = (int(m.group(2)), m.group(1))
    for line in data[off:].decode(errors="replace").splitlines():
        for k, pat in patterns.items():
            if pat in line:
                counts[k] += 1
        t = term_re.search(line)
        if t:
            max_term = max(max_term, int(t.group(1)))
        m = re.search(r"role: (\S+) term=(\d+)", line) if system == "raftkv" else None
        if m:
            role, term = m.group(1), int(m.group(2))
            if last and last[1] == "leader" and role == "follower" and last[0] == term:
                stepdowns += 1
            last = (term, role)
if system == "raftkv":
    counts["quorum_stepdown"] = stepdowns
counts["max_term_logged"] = max_term
print(json.dumps(counts))
EOF
}

offsets() { # LOGDIR: byte size of n1..n3.log
  local i
  for i in 1 2 3; do stat -c %s "$1/n$i.log" 2>/dev/null || echo 0; done
}

run_row() { # SYSTEM CONDITION ROUND
  local system=$1 cond=$2 round=$3
  local log="$OUT/logs/$system-$cond-r$round" adv latency=-1 loss=0
  rm -rf "$log"; mkdir -p "$log"
  DATA_DIR=$(mktemp -d "$DATA_ROOT/degraded-data.XXXXXX")
  case $cond in lat*) latency=${cond#lat} ;; loss*) loss=${cond#loss} ;; esac

  local real peers state
  if [ "$system" = raftkv ]; then real=7000; adv=7100; peers=(7000 7100); state=raftkv_state
  else real=2380; adv=2381; peers=(2380 2381); state=etcd_state; fi
  if [ "$latency" -ge 0 ]; then start_proxy "$latency" "$log" "$adv" "$real"; else adv=$real; fi
  "${system}_start" "$DATA_DIR" "$log" "$adv"

  local term0=0 leader0=0 t0
  t0=$(date +%s)
  while [ $(($(date +%s) - t0)) -lt $LEADER_WAIT_S ]; do
    read -r term0 leader0 < <($state)
    [ "$leader0" != 0 ] && break
    sleep 0.3
  done
  local ts load; ts=$(date -u +%FT%TZ); load=$(cut -d' ' -f1 /proc/loadavg)
  local result='{}' term1=$term0 leader1=0 counts='{}' note=""
  if [ "$leader0" = 0 ]; then
    note="no leader within ${LEADER_WAIT_S}s"
    read -r term1 leader1 < <($state)
  else
    sleep 1 # let the new leader's first heartbeats and term-start entry settle
    local term leader
    read -r term leader < <($state)
    if [ "$leader" != 0 ]; then term0=$term; leader0=$leader; fi
    local offs; offs=$(offsets "$log")
    [ "$loss" -gt 0 ] && apply_loss "$loss" "${peers[@]}"
    local target
    if [ "$system" = raftkv ]; then target=(--target resp --addr "${IPS[leader0-1]}:6379")
    else target=(--target etcd --endpoints "${IPS[leader0-1]}:2379"); fi
    # In the background, so that a signal runs the cleanup at once, not after the load ends.
    timeout $((WARMUP + DURATION + 60)) "$KVLOAD" "${target[@]}" --op put --clients "$CLIENTS" \
      --duration "$DURATION" --warmup "$WARMUP" --label "$system $cond" >"$log/kvload.out" 2>&1 &
    PIDS+=($!)
    wait "${PIDS[-1]}" || true
    unset 'PIDS[-1]'
    result=$(tail -1 "$log/kvload.out")
    python3 -c 'import json,sys; json.loads(sys.argv[1])' "$result" 2>/dev/null || { result='{}'; note="kvload gave no result (see kvload.out)"; }
    read -r term1 leader1 < <($state)
    # shellcheck disable=SC2086
    counts=$(log_counts "$system" "$log" $offs)
    unhook
  fi
  stop_pids
  rm -rf "$DATA_DIR"; DATA_DIR=""

  local campaign=0
  pgrep -f "raftchaos run" >/dev/null && campaign=1
  python3 - "$system" "$cond" "$round" "$ts" "$term0" "$term1" "$leader0" "$leader1" "$result" \
    "$counts" "$note" "$LABEL" "$CLIENTS" "$DURATION" "$campaign" "$RAFTKV_FLAGS" "$ETCD_FLAGS" "$load" \
    >>"$OUT/results.jsonl" <<'EOF'
import json, sys
(system, cond, rnd, ts, t0, t1, l0, l1, result, counts, note, label, clients, duration,
 campaign, rflags, eflags, load) = sys.argv[1:]
r = json.loads(result)
events = json.loads(counts)
# The term after the run: the highest of what the nodes answered and what they logged by now.
t1_status = int(t1)
t1 = str(max(t1_status, events.get("max_term_logged", 0)))
row = {"system": system, "condition": cond, "round": int(rnd), "start": ts, "label": label,
       "flags": rflags if system == "raftkv" else eflags,
       "clients": int(clients), "duration_s": int(duration),
       "ops_per_s": r.get("ops_per_s"), "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us"),
       "errors": r.get("errors"), "term_before": int(t0), "term_after": int(t1),
       "term_after_status": t1_status,
       "elections": int(t1) - int(t0), "leader_before": int(l0), "leader_after": int(l1),
       "leader_kept": l0 != "0" and l0 == l1, "log_events": events,
       "beside_niced_campaign": campaign == "1", "loadavg_1m_at_start": float(load),
       "note": note, "kvload": r}
print(json.dumps(row))
EOF
  tail -1 "$OUT/results.jsonl" >>"$ROWS"
  tail -1 "$OUT/results.jsonl" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("{system:7} {condition:7} ops/s={ops_per_s} p99_us={p99_us} errors={errors} "
      "elections={elections} leader_kept={leader_kept} {note}".format(**r))' >&2
}

# ---- main ------------------------------------------------------------------------------------

preflight
mkdir -p "$OUT"
ROWS=$(mktemp /tmp/degraded-rows.XXXXXX)
for round in $(seq "$REPEAT"); do
  for system in $SYSTEMS; do
    for cond in $CONDITIONS; do
      run_row "$system" "$cond" "$round"
    done
  done
done

python3 - "$ROWS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def cond(c):
    if c == "none": return "none"
    if c.startswith("loss"): return f"loss {c[4:]}%"
    ms = int(c[3:]); return f"latency {ms} ms ± {ms // 10}" if ms else "proxy, 0 ms"
def num(v, scale=1, digits=0):
    return "–" if v is None else f"{v / scale:,.{digits}f}"
print("| system | condition | ops/s | p50 ms | p99 ms | errors | elections | leader kept | note |")
print("|---|---|---:|---:|---:|---:|---:|---|---|")
for r in rows:
    if not r["ops_per_s"]:  # no request succeeded: no latency to show
        r["p50_us"] = r["p99_us"] = None
    name = r["system"] + (f" ({r['flags']})" if r["flags"] else "")
    print(f"| {name} | {cond(r['condition'])} | {num(r['ops_per_s'])} | {num(r['p50_us'], 1000, 1)} "
          f"| {num(r['p99_us'], 1000, 1)} | {num(r['errors'])} | {r['elections']} "
          f"| {'yes' if r['leader_kept'] else 'no'} | {r['note']} |")
EOF
