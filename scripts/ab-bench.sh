#!/usr/bin/env bash
# A/B of two weft-bench binaries in alternating pairs (the machine's speed drifts, so A and B
# always run minutes apart, never an hour apart). Prints a median table at the end.
#   scripts/ab-bench.sh OUT_DIR BENCH_A BENCH_B [SQLITE_PAIRS=5] [PG_PAIRS=3]
# Build each side with `cargo build --release -p weft-bench` at its commit and copy the binary.
set -euo pipefail
out=$1; A=$2; B=$3; sq=${4:-5}; pg=${5:-3}
mkdir -p "$out"
run() { # backend side index bin args...
  local be=$1 side=$2 i=$3 bin=$4; shift 4
  echo "$(date -u +%T) $be $side $i load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/summary.txt"
  "$bin" "$@" --workload throughput,latency --json "$out/$be-$side-$i.json" > "$out/$be-$side-$i.txt" 2>&1
}
for i in $(seq 1 "$sq"); do
  run sqlite a "$i" "$A" --workflows 2000
  run sqlite b "$i" "$B" --workflows 2000
done
for i in $(seq 1 "$pg"); do
  run pg a "$i" "$A" --postgres --workflows 1000
  run pg b "$i" "$B" --postgres --workflows 1000
done
python3 "$(dirname "$0")/ab_summary.py" "$out"
