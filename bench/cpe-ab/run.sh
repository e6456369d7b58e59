#!/usr/bin/env bash
# Side-by-side A/B of two `tandem` binaries on the rural lab, priority mode
# (the CPE's default): the overflow ramp and false failovers under a full
# uplink. Each binary gets its own lab, one after the other; only ratios
# between the two mean anything.
#
#   bench/cpe-ab/run.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# A baseline binary from an earlier commit:
#   git worktree add /tmp/tandem-base d39c259
#   (cd /tmp/tandem-base && cargo build --release --locked -p tandem)
#   bench/cpe-ab/run.sh /tmp/tandem-base/target/release/tandem target/release/tandem
#
# Per binary: 3 downloads of 28.5 MB (6 s of both links), 3 fetches of 2 MB
# (a short transfer: the ramp dominates), then ROUNDS (default 4) rounds of
# 8 parallel 1.5 MB uploads, and the CPE's "link down" events meanwhile (the
# links stay up: every event is a false failover).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,17p "$0"; exit 2; }
ROUNDS=${3:-4}
NAME=ab
ORIGIN=http://203.0.113.10
current=""
cleanup() { [ -n "$current" ] && "$current" lab down --name "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

one() {
  local bin=$1
  current=$bin
  "$bin" lab up --profile rural --name "$NAME" >/dev/null
  sleep 2
  local dl=() small=() rounds=()
  for _ in 1 2 3; do
    dl+=("$(ip netns exec $NAME-home curl -sS --fail --max-time 60 -o /dev/null -w '%{speed_download}' $ORIGIN/bytes/28500000 | awk '{printf "%.1f", $1*8/1e6}')")
    sleep 3
  done
  for _ in 1 2 3; do
    small+=("$(ip netns exec $NAME-home curl -sS --fail --max-time 30 -o /dev/null -w '%{time_total}' $ORIGIN/bytes/2000000 | awk '{printf "%.2f", $1}')")
    sleep 3
  done
  local file=/run/tandem-lab/$NAME/up.bin
  head -c 1500000 /dev/urandom > "$file"
  for _ in $(seq "$ROUNDS"); do
    local t0; t0=$(date +%s.%N)
    local pids=()
    for _ in 1 2 3 4 5 6 7 8; do
      ip netns exec $NAME-home curl -sS --fail --max-time 90 -o /dev/null -T "$file" $ORIGIN/upload & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || echo "  an upload failed"; done
    rounds+=("$(echo "$(date +%s.%N) - $t0" | bc | awk '{printf "%.1f", $1}')")
  done
  local downs; downs=$(grep -c 'link down' /run/tandem-lab/$NAME/cpe.log || true)
  echo "$bin"
  echo "  download 28.5 MB, Mbit/s: ${dl[*]}"
  echo "  fetch 2 MB, s:            ${small[*]}"
  echo "  8 uploads of 1.5 MB, s:   ${rounds[*]}"
  echo "  false link-down events:   $downs"
  "$bin" lab down --name "$NAME" >/dev/null
  current=""
}

one "$1"
one "$2"
