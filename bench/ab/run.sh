#!/usr/bin/env bash
# Side-by-side A/B of two `tandem` binaries on the quick benchmark
# (`tandem bench --quick`: every contender on the same lab links, both
# directions, failover, latency, relay cost). The binaries alternate,
# OLD NEW OLD NEW ..., each with its own lab (its own lab code), so a drift
# of the machine during the run hits both; only the ratios between them
# mean anything.
#
#   bench/ab/run.sh OLD_BINARY NEW_BINARY [ROUNDS] [OUT_DIR]
#
# A baseline binary from an earlier commit:
#   git worktree add /tmp/tandem-base 1bcb92c
#   (cd /tmp/tandem-base && cargo build --release --locked -p tandem)
#   cargo build --release --locked -p tandem
#   bench/ab/run.sh /tmp/tandem-base/target/release/tandem target/release/tandem 2
#
# Each run's JSON goes to OUT_DIR/{old,new}-N/ (default target/bench-ab);
# then bench/ab/compare.py prints the medians of both and new / old for
# every figure, as a markdown table.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,19p "$0"; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-2}
cd "$(dirname "$0")/../.."
OUT=${4:-target/bench-ab}
rm -rf "$OUT"
mkdir -p "$OUT"
for i in $(seq "$ROUNDS"); do
  for side in old new; do
    bin=$OLD
    [ "$side" = new ] && bin=$NEW
    echo "== round $i: $side ($bin)"
    # A failed measurement is in the JSON's errors; the comparison goes on.
    "$bin" bench --quick --no-readme --name ab --out-dir "$OUT/$side-$i" >"$OUT/$side-$i.log" 2>&1 ||
      echo "   (exit $?: see $OUT/$side-$i.log)"
  done
done
python3 bench/ab/compare.py "$OUT"
