#!/usr/bin/env bash
# Smoke test of raftkv with the real redis-cli: starts a 3-node cluster from the built binary in a
# temporary directory, runs a few commands, checks their output, and stops the nodes (SIGTERM,
# expecting exit 0). Everything is removed on exit, whatever happens.
#
# Usage: scripts/redis-cli-smoke.sh            (builds target/debug/raftkv if needed)
#        RAFTKV_BIN=target/release/raftkv scripts/redis-cli-smoke.sh
# Needs redis-cli (Debian: apt-get install -y redis-tools).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-cli-smoke: redis-cli is not installed (apt-get install -y redis-tools)" >&2
    exit 1
fi

BIN="${RAFTKV_BIN:-}"
if [[ -z "$BIN" ]]; then
    cargo build -q -p raftkv
    BIN="${CARGO_TARGET_DIR:-target}/debug/raftkv"
fi
[[ -x "$BIN" ]] || { echo "redis-cli-smoke: no raftkv binary at $BIN" >&2; exit 1; }

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ $status -ne 0 ]]; then
        for log in "$TMP"/node-*.log; do
            [[ -f "$log" ]] || continue
            echo "--- $log (last 20 lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    rm -rf "$TMP"
    exit $status
}
trap cleanup EXIT

passed=0
failed=0
check() { # check NAME EXPECTED ACTUAL
    if [[ "$3" == "$2" ]]; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1: expected '$2', got '$3'"
    fi
}

# Nine ports nobody listens on: raft, client and admin for each node (the secured cluster,
# started second, takes them again). They are taken below the
# kernel's ephemeral range (32768 and up by default): a node dialing a peer that is not up yet
# gets a local port from that range, which could be one of ours.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_base() {
    local base port tries
    for tries in $(seq 1 50); do
        base=$((20000 + RANDOM % 12000))
        for port in $(seq "$base" $((base + 8))); do
            if port_in_use "$port"; then continue 2; fi
        done
        echo "$base"
        return
    done
    echo "redis-cli-smoke: no free ports" >&2
    exit 1
}
BASE="$(pick_base)"
raft_port() { echo $((BASE + $1 - 1)); }
client_port() { echo $((BASE + 3 + $1 - 1)); }
admin_port() { echo $((BASE + 6 + $1 - 1)); }

NODES=()
for id in 1 2 3; do
    NODES+=(--node "$id=127.0.0.1:$(raft_port "$id"),127.0.0.1:$(client_port "$id")")
done

for id in 1 2 3; do
    RAFTKV_LOG=info "$BIN" serve --id "$id" "${NODES[@]}" \
        --admin "127.0.0.1:$(admin_port "$id")" --data-dir "$TMP/node-$id" \
        >"$TMP/node-$id.out" 2>"$TMP/node-$id.log" &
    PIDS+=($!)
done

# Each node prints one line when it serves.
for id in 1 2 3; do
    for _ in $(seq 1 200); do
        grep -q "^raftkv node $id ready: " "$TMP/node-$id.out" && break
        sleep 0.1
    done
    grep -q "^raftkv node $id ready: raft 127.0.0.1:$(raft_port "$id") client 127.0.0.1:$(client_port "$id") admin 127.0.0.1:$(admin_port "$id")$" "$TMP/node-$id.out" \
        || { echo "node $id is not ready: $(cat "$TMP/node-$id.out")" >&2; exit 1; }
done

# Wait for a leader that every node knows.
LEADER=""
for _ in $(seq 1 200); do
    for id in 1 2 3; do
        if redis-cli -p "$(client_port "$id")" info replication 2>/dev/null | tr -d '\r' | grep -qx "role:leader"; then
            LEADER="$id"
        fi
    done
    if [[ -n "$LEADER" ]]; then
        known=0
        for id in 1 2 3; do
            redis-cli -p "$(client_port "$id")" info replication 2>/dev/null | tr -d '\r' \
                | grep -qx "raft_leader_id:$LEADER" && known=$((known + 1))
        done
        [[ $known -eq 3 ]] && break
    fi
    LEADER=""
    sleep 0.1
done
[[ -n "$LEADER" ]] || { echo "no leader elected" >&2; exit 1; }
echo "leader: node $LEADER"
P="$(client_port "$LEADER")"
FOLLOWER=$(( LEADER % 3 + 1 ))
F="$(client_port "$FOLLOWER")"

check "PING" "PONG" "$(redis-cli -p "$P" ping)"
check "SET k v" "OK" "$(redis-cli -p "$P" set k v)"
check "GET k" "v" "$(redis-cli -p "$P" get k)"
check "GET k at a follower" "v" "$(redis-cli -p "$F" get k)"
check "INCR n" "1" "$(redis-cli -p "$P" incr n)"
check "INCR n again" "2" "$(redis-cli -p "$P" incr n)"
check "GET missing" "" "$(redis-cli -p "$P" get missing)"
check "DEL k" "1" "$(redis-cli -p "$P" del k)"
INFO="$(redis-cli -p "$P" info replication | tr -d '\r')"
check "INFO role" "role:leader" "$(grep '^role:' <<<"$INFO")"
check "INFO leader id" "raft_leader_id:$LEADER" "$(grep '^raft_leader_id:' <<<"$INFO")"
check "INFO at a follower" "role:follower" "$(redis-cli -p "$F" info replication | tr -d '\r' | grep '^role:')"
check "unknown command" "ERR unknown command 'nosuch', with args beginning with: 'x' " \
    "$(redis-cli -p "$P" nosuch x 2>&1)"

# A graceful stop: SIGTERM, exit status 0.
for i in 0 1 2; do
    kill -TERM "${PIDS[$i]}"
done
for i in 0 1 2; do
    status=0
    wait "${PIDS[$i]}" || status=$?
    check "node $((i + 1)) exits 0 on SIGTERM" "0" "$status"
done
PIDS=()

# A 3-node cluster with mutual TLS between the nodes, TLS and users on the client ports, TLS and
# a token on the admin ports (on the ports the first cluster used): redis-cli's --tls,
# --user/--pass, roles and key patterns.
"$BIN" certs init "$TMP/certs" --nodes 1,2,3 >/dev/null
ALICE_HASH="$(printf 'alice-pw\n' | "$BIN" passwd)"
READER_HASH="$("$BIN" passwd --password reader-pw)"
ADMIN_TOKEN="smoke-admin-token"
TOKEN_HASH="$("$BIN" passwd --admin-token --password "$ADMIN_TOKEN")"
SECURE_PIDS=()
for id in 1 2 3; do
    cat >"$TMP/secure-$id.toml" <<TOML
id = $id
data_dir = "$TMP/secure-$id"
admin = "127.0.0.1:$(admin_port "$id")"
admin_token_hash = "$TOKEN_HASH"
election_ms = [150, 300]

[tls]
dir = "$TMP/certs"

[[nodes]]
id = 1
raft = "127.0.0.1:$(raft_port 1)"
client = "127.0.0.1:$(client_port 1)"

[[nodes]]
id = 2
raft = "127.0.0.1:$(raft_port 2)"
client = "127.0.0.1:$(client_port 2)"

[[nodes]]
id = 3
raft = "127.0.0.1:$(raft_port 3)"
client = "127.0.0.1:$(client_port 3)"

[[users]]
name = "alice"
password_hash = "$ALICE_HASH"
role = "read-write"
keys = ["app:*"]

[[users]]
name = "reader"
password_hash = "$READER_HASH"
role = "read-only"
keys = ["app:*", "cfg:*"]
TOML
    RAFTKV_LOG=info "$BIN" serve --config "$TMP/secure-$id.toml" \
        >"$TMP/node-secure-$id.out" 2>"$TMP/node-secure-$id.log" &
    PIDS+=($!)
    SECURE_PIDS+=($!)
done
for id in 1 2 3; do
    for _ in $(seq 1 200); do
        grep -q "^raftkv node $id ready: " "$TMP/node-secure-$id.out" && break
        sleep 0.1
    done
done
SECURE_ADMIN="$(admin_port 1)"
SECURE_CLIENT="$(client_port 1)"
S="$SECURE_CLIENT"
TLS=(--tls --cacert "$TMP/certs/ca.pem")
as_alice() { redis-cli -p "$S" "${TLS[@]}" --user alice --pass alice-pw --no-auth-warning "$@" 2>&1; }
as_reader() { redis-cli -p "$S" "${TLS[@]}" --user reader --pass reader-pw --no-auth-warning "$@" 2>&1; }
# Until the nodes have elected a leader over mutual TLS, writes answer TRYAGAIN.
for _ in $(seq 1 200); do
    [[ "$(as_alice set app:1 v1)" == "OK" ]] && break
    sleep 0.1
done
for id in 2 3; do
    check "TLS: node $id serves the write made at node 1" "v1" \
        "$(redis-cli -p "$(client_port "$id")" "${TLS[@]}" --user alice --pass alice-pw --no-auth-warning get app:1 2>&1)"
done
check "AUTH: alice sets her key" "OK" "$(as_alice set app:1 v2)"
check "AUTH: alice reads it" "v2" "$(as_alice get app:1)"
check "AUTH: no credentials" "NOAUTH Authentication required." "$(redis-cli -p "$S" "${TLS[@]}" get app:1 2>&1)"
PLAIN="$(timeout 10 redis-cli -p "$S" --user alice --pass alice-pw --no-auth-warning get app:1 2>&1 || true)"
check "TLS: a plaintext client gets no answer" "yes" \
    "$(grep -q -e v2 -e NOAUTH <<<"$PLAIN" && echo "no: $PLAIN" || echo yes)"
check "TLS: a client certificate works too" "v2" \
    "$(redis-cli -p "$S" "${TLS[@]}" --cert "$TMP/certs/client.pem" --key "$TMP/certs/client-key.pem" \
        --user alice --pass alice-pw --no-auth-warning get app:1 2>&1)"
WRONG="$(redis-cli -p "$S" "${TLS[@]}" --user alice --pass wrong --no-auth-warning get app:1 2>&1)"
check "AUTH: wrong password refused" "yes" "$(grep -q WRONGPASS <<<"$WRONG" && echo yes || echo "no: $WRONG")"
check "AUTH: read-only user reads" "v2" "$(as_reader get app:1)"
check "AUTH: read-only user cannot SET" "NOPERM User reader has no permissions to run a write command" \
    "$(as_reader set app:1 x)"
check "AUTH: key pattern enforced" "NOPERM No permissions to access a key" "$(as_alice set cfg:1 x)"
check "AUTH: the value is unchanged" "v2" "$(as_alice get app:1)"
SNAPSHOT_STATUS=0
"$BIN" cluster --admin "127.0.0.1:$SECURE_ADMIN" --tls-ca "$TMP/certs/ca.pem" snapshot >/dev/null 2>&1 \
    || SNAPSHOT_STATUS=$?
check "admin: snapshot without the token refused" "1" "$SNAPSHOT_STATUS"
SNAPSHOT_STATUS=0
RAFTKV_ADMIN_TOKEN="$ADMIN_TOKEN" "$BIN" cluster --admin "127.0.0.1:$SECURE_ADMIN" \
    --tls-ca "$TMP/certs/ca.pem" snapshot >/dev/null 2>&1 || SNAPSHOT_STATUS=$?
check "admin: snapshot with the token" "0" "$SNAPSHOT_STATUS"
SNAPSHOT_STATUS=0
"$BIN" cluster --admin "127.0.0.1:$SECURE_ADMIN" --tls-ca "$TMP/certs/ca.pem" \
    --tls-cert "$TMP/certs/client.pem" --tls-key "$TMP/certs/client-key.pem" snapshot >/dev/null 2>&1 \
    || SNAPSHOT_STATUS=$?
check "admin: snapshot with a client certificate" "0" "$SNAPSHOT_STATUS"
SNAPSHOT_STATUS=0
kill -HUP "${SECURE_PIDS[@]}"
for id in 1 2 3; do
    for _ in $(seq 1 50); do
        grep -q "TLS certificates reloaded" "$TMP/node-secure-$id.log" && break
        sleep 0.1
    done
    check "SIGHUP reloads node $id's certificates" "yes" \
        "$(grep -q "TLS certificates reloaded" "$TMP/node-secure-$id.log" && echo yes || echo no)"
done
check "served after the reload" "v2" "$(as_alice get app:1)"
RAFTKV_ADMIN_TOKEN="$ADMIN_TOKEN" "$BIN" cluster --admin "127.0.0.1:$SECURE_ADMIN" \
    --tls-ca "$TMP/certs/ca.pem" snapshot >/dev/null 2>&1 || SNAPSHOT_STATUS=$?
check "admin: snapshot with the token after the reload" "0" "$SNAPSHOT_STATUS"
kill -TERM "${SECURE_PIDS[@]}"
for i in 0 1 2; do
    status=0
    wait "${SECURE_PIDS[$i]}" || status=$?
    check "secured node $((i + 1)) exits 0 on SIGTERM" "0" "$status"
done
PIDS=()

echo "redis-cli smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
