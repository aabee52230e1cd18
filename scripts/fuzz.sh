#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder (fuzz/, see docs/security.md#fuzzing), on stable Rust.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 s, every target
#   scripts/fuzz.sh --write-seeds                        rewrite fuzz/corpus/ (examples/seeds.rs)
#
# The targets are libFuzzer binaries (crate libfuzzer-sys) built by plain cargo with LLVM's
# sanitizer-coverage passes switched on through stable -C flags, the same instrumentation
# `cargo fuzz build --sanitizer none` uses; no nightly toolchain, no cargo-fuzz needed. Each
# target runs alone, one process, from its committed seeds (fuzz/corpus/<target>, read only)
# plus what earlier local runs found (fuzz/runs/<target>/corpus, not committed). Any crash,
# failed assertion, timeout or memory limit fails the script; the input is kept under
# fuzz/runs/<target>/artifacts/ and replays with `fuzz/target/<triple>/release/<target> FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(resp resp_reply peer_frame handshake wal snapshot_file config_toml scenario)
# Limits (docs/security.md): per input at most 10 s, at most 1 GiB resident. libFuzzer's
# -malloc_limit_mb needs a sanitizer's malloc hooks, so the targets' own global allocator
# (fuzz/src/lib.rs) enforces 256 MiB per allocation and 768 MiB live; the flag is passed anyway
# for a build with a sanitizer (cargo fuzz run).
LIMITS=(-rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10)

max_len() {
  case "$1" in
    wal) echo 32768 ;;
    peer_frame | scenario) echo 16384 ;;
    handshake | snapshot_file | config_toml) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null 2>&1; then
  echo "== installing g++ (libFuzzer is C++)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq g++ >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq g++ >/dev/null; fi
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the flags off build scripts and proc macros (they are not linked with libFuzzer).
build() {
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
    cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$host" "$@"
}
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$host/release"

if [ "${1:-}" = "--write-seeds" ]; then
  build --example seeds
  "$bin_dir/examples/seeds"
  exit 0
fi

seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

echo "== building ${#targets[@]} fuzz targets ($host, release, sanitizer-coverage)"
build_args=()
for t in "${targets[@]}"; do build_args+=(--bin "$t"); done
build "${build_args[@]}"

summary=()
failed=()
for t in "${targets[@]}"; do
  run="fuzz/runs/$t"
  mkdir -p "$run/corpus" "$run/artifacts"
  log="$run/last.log"
  echo "== fuzz $t: ${seconds} s, max_len $(max_len "$t")"
  status=0
  "$bin_dir/$t" "${LIMITS[@]}" -max_len="$(max_len "$t")" -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix="$run/artifacts/" \
    "$run/corpus" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(grep -oE 'corp: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  line=$(printf '%-14s %6ss %12s execs %8s exec/s  corpus %6s  peak rss %5s MB' \
    "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "${rss:-?}")
  if [ "$status" -ne 0 ] || grep -qE '^(==[0-9]+== ERROR: libFuzzer|SUMMARY: libFuzzer)' "$log"; then
    echo "FAILED (exit $status): $t; the end of $log:"
    tail -n 40 "$log"
    ls -1 "$run/artifacts/" | sed 's/^/  artifact: /'
    failed+=("$t")
    line="$line  FAILED"
  fi
  echo "$line"
  summary+=("$line")
done
# The wal target's scratch directories (emptied after every input; see fuzz/src/lib.rs).
find /dev/shm -maxdepth 1 -type d -name 'raftengine-fuzz-*' -empty -delete 2>/dev/null || true

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash, hang or memory limit hit"
