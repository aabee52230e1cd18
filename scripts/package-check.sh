#!/usr/bin/env bash
# The published library crates, as they would be uploaded, and an application built on them.
#
# 1. `cargo package` the four library crates (raftengine, raftwal, raftnet, lincheck). Each
#    .crate is unpacked and built on its own (cargo's verification step), with its path
#    dependencies turned into version requirements; since none is on crates.io yet, cargo
#    resolves them against the .crate files packaged in the same run (a local registry overlay),
#    so this needs nothing unpublished from the network.
# 2. Unpack the .crate files into target/package-check/crates and copy
#    scripts/external-consumer (a crate outside the workspace that depends on raftengine and
#    raftnet by version, as an application does) next to them, with `[patch.crates-io]` pointing
#    at the unpacked packages and the workspace's Cargo.lock as its starting lock (the versions
#    the workspace is tested with).
# 3. Check that the application's dependency tree holds no tool's dependency (clap, mimalloc:
#    the binaries live in unpublished crates), build it, and run it: three nodes over loopback
#    TCP with durable logs, a few increments, every node must read the same total.
#
# Usage: scripts/package-check.sh [extra `cargo package` flags, e.g. --allow-dirty]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

crates=(raftengine raftwal raftnet lincheck)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
out=$root/target/package-check

echo "== cargo package ${crates[*]} (version $version), each built from its .crate"
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
SECONDS=0
cargo package --locked "${args[@]}" "$@"
echo "   packaged and verified in ${SECONDS} s"

echo "== unpack the .crate files; an external crate depends on them"
rm -rf "$out/crates" "$out/consumer"
mkdir -p "$out/crates" "$out/consumer"
for c in "${crates[@]}"; do
  crate=target/package/$c-$version.crate
  # What a user downloads: no symlinks left behind, the licenses and README inside.
  for f in LICENSE-MIT LICENSE-APACHE README.md Cargo.toml src/lib.rs; do
    tar -tzf "$crate" "$c-$version/$f" >/dev/null || { echo "$crate lacks $f" >&2; exit 1; }
  done
  tar -xzf "$crate" -C "$out/crates"
done
cp -r scripts/external-consumer/Cargo.toml scripts/external-consumer/src "$out/consumer/"
cp Cargo.lock "$out/consumer/Cargo.lock"
{
  echo
  echo "# Added by scripts/package-check.sh: the packaged crates stand in for crates.io's."
  echo "[patch.crates-io]"
  for c in raftengine raftwal raftnet; do
    echo "$c = { path = \"$out/crates/$c-$version\" }"
  done
} >>"$out/consumer/Cargo.toml"

cd "$out/consumer"
# The workspace's target directory: the registry dependencies built by the verification step
# above (same versions, same features) are reused; only the three packaged crates and the
# program itself are compiled again, from the unpacked packages.
export CARGO_TARGET_DIR=$root/target
# Drops the workspace's own packages from the copied lock and adds nothing new: every version
# is one the workspace was tested with.
cargo tree -e normal --prefix none >tree.txt
for c in raftengine raftwal raftnet; do
  grep -q "^$c v$version ($out/crates/$c-$version)" tree.txt ||
    { echo "$c does not come from its package:" >&2; grep "^$c " tree.txt >&2; exit 1; }
done
if grep -E '^(clap|mimalloc) ' tree.txt; then
  echo "a library crate pulls in a tool's dependency (above)" >&2
  exit 1
fi
echo "   $(sort -u tree.txt | wc -l) crates in the application's tree; no clap, no mimalloc"

echo "== build and run the external counter (3 nodes, loopback TCP, durable logs)"
SECONDS=0
cargo build --locked -q
echo "   built in ${SECONDS} s"
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
timeout 120 "$CARGO_TARGET_DIR/debug/external-consumer" "$data" 20
