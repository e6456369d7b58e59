#!/usr/bin/env bash
# Steering, failover, UDP and budget figures, measured by the end-to-end
# tests in crates/tandem/tests/steering.rs (real HAG and CPE, release build,
# in the lab), N runs (default 3): bench/steering/results.md.
# As root: bench/steering/run.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for i in $(seq 1 "$runs"); do
  echo "== run $i of $runs"
  cargo test --release --locked -p tandem --test steering -- --nocapture --test-threads 1 2>&1 \
    | tee -a "$log" | grep -E "^test |stall|share|carrying|UDP|budget|HAG counted" || true
done
python3 bench/steering/summarize.py "$log" "$runs" "$0 $runs" > bench/steering/results.md
echo "written: bench/steering/results.md"
