#!/bin/bash
# usage: cluster.sh RAFTKV_BIN DIR [serve flags...]: (re)starts a 3-node raftkv cluster with fresh
# data in DIR (client ports 6491-6493, raft 7201-7203, admin 8201-8203); prints the leader's
# client port. PIDs go to DIR/pids.
BIN=$1; DIR=$2; shift 2
if [ -f "$DIR/pids" ]; then kill $(cat "$DIR/pids") 2>/dev/null; sleep 0.5; fi
rm -rf "$DIR"; mkdir -p "$DIR"
for N in 1 2 3; do
  "$BIN" serve --id $N --node 1=127.0.0.1:7201,127.0.0.1:6491 --node 2=127.0.0.1:7202,127.0.0.1:6492 \
    --node 3=127.0.0.1:7203,127.0.0.1:6493 --admin 127.0.0.1:820$N --data-dir "$DIR/node-$N" "$@" \
    > "$DIR/n$N.log" 2>&1 &
  echo $! >> "$DIR/pids"
done
sleep 1.5
for p in 6491 6492 6493; do redis-cli -p $p info replication | grep -q "role:leader" && echo $p; done
exit 0
