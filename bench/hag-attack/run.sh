#!/usr/bin/env bash
# The HAG under attack: a subscriber's download goodput through Tandem with
# and without floods from the lab's attacker node (a compromised home inside
# the access networks, attached straight to the HAG), side by side, 3 runs
# each, alternating. Writes bench/hag-attack/results.md.
#
#   make bench-attack          (or: bench/hag-attack/run.sh [profile] [runs])
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${1:-rural}
RUNS=${2:-3}
T=./target/release/tandem
NAME=batk
SIZE=20000000
OUT=bench/hag-attack/results.md
cleanup() { $T lab down --name $NAME >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
$T lab up --name $NAME --profile "$PROFILE" >/dev/null

rate() { # Mbit/s of one download from the home through Tandem
  ip netns exec $NAME-home curl -sS --fail --max-time 120 -o /dev/null -w '%{speed_download}' \
    "http://203.0.113.10/bytes/$SIZE" | awk '{printf "%.2f", $1*8/1e6}'
}
attack() { # floods for 16 s: idle connections, slowloris, garbage headers
  $T lab attack --name $NAME --mode idle --connections 8000 --rate 1500 --seconds 16 > /tmp/$NAME-idle.txt &
  $T lab attack --name $NAME --mode slow --connections 3000 --rate 600 --seconds 16 > /tmp/$NAME-slow.txt &
  $T lab attack --name $NAME --mode garbage --connections 20000 --rate 1500 --seconds 16 > /tmp/$NAME-garbage.txt &
}
quiet=(); loud=()
for i in $(seq "$RUNS"); do
  quiet+=("$(rate)")
  attack; sleep 2
  loud+=("$(rate)")
  wait
  echo "run $i: quiet ${quiet[-1]} Mbit/s, under attack ${loud[-1]} Mbit/s" >&2
done
refused=$(ip netns exec $NAME-hag curl -s http://127.0.0.1:9102/metrics | grep '^tandem_hag_refused_total' | sort -t' ' -k2 -nr | head -8)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minv() { printf '%s\n' "$@" | sort -n | head -1; }
maxv() { printf '%s\n' "$@" | sort -n | tail -1; }
mq=$(median "${quiet[@]}"); ml=$(median "${loud[@]}")
ratio=$(awk -v a="$ml" -v b="$mq" 'BEGIN {printf "%.0f", 100*a/b}')
{
  echo "# HAG under attack ($PROFILE profile)"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(uname -sr), by \`bench/hag-attack/run.sh $PROFILE $RUNS\`."
  echo "A home downloads $SIZE bytes through Tandem (CPE + HAG over both emulated links), $RUNS times"
  echo "quietly and $RUNS times while the attacker node floods the HAG with 8,000 idle"
  echo "connections (1,500/s), 3,000 slowloris connections (600/s) and 20,000 garbage"
  echo "Convert headers (1,500/s), alternating. Target: ≥ 90 % of the quiet goodput."
  echo
  echo "| | median Mbit/s | min | max |"
  echo "|---|---|---|---|"
  echo "| quiet | $mq | $(minv "${quiet[@]}") | $(maxv "${quiet[@]}") |"
  echo "| under attack | $ml | $(minv "${loud[@]}") | $(maxv "${loud[@]}") |"
  echo "| **ratio** | **$ratio %** | | |"
  echo
  echo "Attacker's view of the last run:"
  echo
  for m in idle slow garbage; do echo "- $m: \`$(cat /tmp/$NAME-$m.txt)\`"; done
  echo
  echo "What the HAG refused (all runs, top reasons, \`tandem_hag_refused_total\`):"
  echo
  echo '```'
  echo "$refused"
  echo '```'
} > "$OUT"
rm -f /tmp/$NAME-*.txt
cat "$OUT"
