#!/usr/bin/env bash
# Wall time of ovslab's main operations, through the real daemon and CLI.
# Prints one table: operation, runs, median, min, max (milliseconds).
# Needs root and release binaries (make bench builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BIN=${BIN:-target/release}
dir=$(mktemp -d /tmp/ovslab-bench.XXXXXX)
sock=$dir/ovslabd.sock
"$BIN/ovslabd" --socket "$sock" --run-dir "$dir/run" --labs-dir "$dir/none" >"$dir/ovslabd.log" 2>&1 &
daemon=$!
cleanup() {
  for lab in "${labs[@]:-}"; do [ -n "$lab" ] && "$BIN/ovslab" --socket "$sock" down "$lab" >/dev/null 2>&1 || true; done
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  rm -rf "$dir"
}
labs=()
trap cleanup EXIT
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done

ovslab() { "$BIN/ovslab" --socket "$sock" "$@"; }

# time_ms CMD… → prints elapsed milliseconds of CMD (its output discarded).
time_ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

# stats NAME v1 v2 … → one table row.
stats() {
  local name=$1; shift
  local sorted
  sorted=$(printf '%s\n' "$@" | sort -n)
  local n=$#
  local median min max
  median=$(echo "$sorted" | sed -n "$(((n + 1) / 2))p")
  min=$(echo "$sorted" | head -1)
  max=$(echo "$sorted" | tail -1)
  printf '| %-38s | %4d | %8s | %8s | %8s |\n' "$name" "$n" "$median" "$min" "$max"
}

bench_lab() {
  local label=$1 file=$2 lab=$3
  labs+=("$lab")
  local up=() noop=() down=()
  for _ in $(seq "$RUNS"); do
    up+=("$(time_ms ovslab up "$file")")
    noop+=("$(time_ms ovslab up "$file")")
    down+=("$(time_ms ovslab down "$lab")")
  done
  stats "$label up (from nothing)" "${up[@]}"
  stats "$label no-op up" "${noop[@]}"
  stats "$label down" "${down[@]}"
}

"$BIN/ovslab" generate --computes 10 --instances-per-node 10 >"$dir/scale-10-10.yaml"
sed 's/^lab: seed$/lab: benchseed/' lab-topologies/seed.yaml >"$dir/seed.yaml"

echo "ovslab benchmark: $(nproc) cores, $(uname -r), $RUNS runs each, milliseconds"
printf '| %-38s | %4s | %8s | %8s | %8s |\n' operation runs median min max
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..40})" ------ ---------- ---------- ----------
bench_lab "seed" "$dir/seed.yaml" benchseed
bench_lab "10 computes × 10 instances" "$dir/scale-10-10.yaml" scale-10-10
