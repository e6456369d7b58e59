#!/usr/bin/env bash
# tandem shield vs Unbound, side by side on this machine, same 1,000,000-name
# blocklist, same upstream (NSD), dnsperf as the load.
#
#   bench/shield/run.sh [seconds-per-run]      (as root; Debian: make deps)
#
# Each resolver gets CPU 0 (taskset), dnsperf gets CPU 1, one worker thread
# each. Measures: cache-hit queries per second and p99 answer time at that
# load, blocked-name queries per second, and resident memory per blocked
# name (RSS with the list minus RSS without it, divided by the names).
# Prints a Markdown table; writes dnsperf summaries to $OUT (default: a temp
# dir). p99 comes from dnsperf -v (per-answer latencies), same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-15}
NAMES=${NAMES:-1000000}
W=$(mktemp -d /tmp/shield-bench.XXXXXX)
OUT=${OUT:-$W}
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$OUT" = "$W" ] || rm -rf "$W"
}
trap cleanup EXIT

for t in nsd unbound dnsperf dig taskset curl; do
  command -v $t >/dev/null || { echo "missing $t (make deps)"; exit 1; }
done
cargo build --release -p tandem >&2
TANDEM=$PWD/target/release/tandem

echo "generating $NAMES names..." >&2
# Deterministic phishing-like names, about 27 bytes each on average.
awk -v n="$NAMES" 'BEGIN {
  split("com net org info example", tld, " ");
  split("login secure account verify update bank pay", w, " ");
  x = 12345;
  for (i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    printf "%s-%x.%s%d.%s\n", w[(i % 7) + 1], x, w[((i / 7) % 7) + 1], i % 1000, tld[(i % 5) + 1];
  }
}' > "$W/block.txt"
sed 's/.*/local-zone: "&." always_nxdomain/' "$W/block.txt" > "$W/unbound-block.conf"
AVG=$(awk '{ s += length($0) } END { printf "%.1f", s / NR }' "$W/block.txt")

# Upstream: NSD with 1,000 names.
{
  printf '$ORIGIN bench.test.\n$TTL 86400\n@ SOA ns admin 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\n'
  for i in $(seq 0 999); do printf 'h%d A 198.18.%d.%d\n' $i $((i / 250)) $((i % 250)); done
} > "$W/bench.test.zone"
cat > "$W/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@5300
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$W"
  database: ""
  pidfile: "$W/nsd.pid"
  xfrdfile: "$W/xfrd.state"
  zonelistfile: "$W/zone.list"
  xfrdir: "$W"
  logfile: "$W/nsd.log"
remote-control:
  control-enable: no
zone:
  name: bench.test
  zonefile: bench.test.zone
EOF
nsd -d -c "$W/nsd.conf" & PIDS+=($!)
for i in $(seq 0 999); do echo "h$i.bench.test A"; done > "$W/q-hit.txt"
head -n 1000 "$W/block.txt" | sed 's/$/ A/' > "$W/q-blocked.txt"

shield_conf() { # $1: list file or empty
  cat <<EOF
listen = ["127.0.0.2:5353"]
subscriber_prefixes = ["127.0.0.0/8"]
admin_listen = "127.0.0.2:9153"
udp_workers = 1
[upstream]
servers = ["127.0.0.1:5300"]
[warning]
ipv4 = "127.0.0.80"
http_listen = ["127.0.0.2:8080"]
[limits]
rrl_responses_per_second = 0
client_queries_per_second = 0
EOF
  if [ -n "$1" ]; then
    printf '[[lists]]\nname = "bench"\nkind = "domains"\npath = "%s"\naction = "nxdomain"\n' "$1"
  fi
}
unbound_conf() { # $1: include file or empty
  cat <<EOF
server:
  interface: 127.0.0.3@5353
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$W"
  pidfile: "$W/unbound.pid"
  use-syslog: no
  logfile: "$W/unbound.log"
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  msg-cache-size: 64m
  rrset-cache-size: 128m
  ratelimit: 0
  ip-ratelimit: 0
  # bench.test is ours: not the RFC 6761 default local zone.
  local-zone: "test." nodefault
$( [ -n "$1" ] && echo "  include: \"$1\"" )
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@5300
remote-control:
  control-enable: no
EOF
}

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_dns() { # $1 addr
  for _ in $(seq 1 600); do
    dig @"$1" -p 5353 h1.bench.test +time=1 +tries=1 2>/dev/null | grep -q 'status: NOERROR' && return 0
    sleep 0.2
  done
  echo "server $1 did not come up" >&2; exit 1
}
start_shield() { # $1 list
  shield_conf "$1" > "$W/shield.toml"
  taskset -c 0 "$TANDEM" shield run --config "$W/shield.toml" 2> "$W/shield.log" & SPID=$!
  PIDS+=($SPID)
  wait_dns 127.0.0.2
}
start_unbound() { # $1 include
  unbound_conf "$1" > "$W/unbound.conf"
  taskset -c 0 unbound -c "$W/unbound.conf" & UPID=$!
  PIDS+=($UPID)
  wait_dns 127.0.0.3
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# dnsperf at full speed; prints "qps p99_ms" (p99 from the per-answer
# latencies of the verbose output).
perf() { # $1 addr, $2 query file, $3 tag
  taskset -c 1 dnsperf -s "$1" -p 5353 -d "$2" -n 1 -q 50 >/dev/null 2>&1 # warm
  taskset -c 1 dnsperf -s "$1" -p 5353 -d "$2" -l "$SECS" -c 20 -q 200 -T 1 -v > "$W/verbose-$3.txt" 2>&1
  grep -v '^>' "$W/verbose-$3.txt" > "$OUT/dnsperf-$3.txt" || true
  local qps p99
  qps=$(awk '/Queries per second/ { printf "%.0f", $4 }' "$OUT/dnsperf-$3.txt")
  p99=$(awk '$1 == ">" { print $NF }' "$W/verbose-$3.txt" | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", a[i] * 1000 }')
  rm -f "$W/verbose-$3.txt"
  echo "$qps $p99"
}

echo "shield: baseline memory..." >&2
start_shield ""; S0=$(rss_kb $SPID); stop $SPID
echo "shield: $NAMES names..." >&2
T0=$(date +%s.%N); start_shield "$W/block.txt"; T1=$(date +%s.%N)
S1=$(rss_kb $SPID)
read -r S_QPS S_P99 < <(perf 127.0.0.2 "$W/q-hit.txt" shield-hit)
read -r S_BQPS S_BP99 < <(perf 127.0.0.2 "$W/q-blocked.txt" shield-blocked)
stop $SPID

echo "unbound: baseline memory..." >&2
start_unbound ""; U0=$(rss_kb $UPID); stop $UPID
echo "unbound: $NAMES local-zones..." >&2
T2=$(date +%s.%N); start_unbound "$W/unbound-block.conf"; T3=$(date +%s.%N)
U1=$(rss_kb $UPID)
read -r U_QPS U_P99 < <(perf 127.0.0.3 "$W/q-hit.txt" unbound-hit)
read -r U_BQPS U_BP99 < <(perf 127.0.0.3 "$W/q-blocked.txt" unbound-blocked)
stop $UPID

per() { awk -v a="$1" -v b="$2" -v n="$NAMES" 'BEGIN { printf "%.1f", (b - a) * 1024 / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

cat <<EOF
$(date -u +%Y-%m-%d), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -r)
$NAMES blocked names (average $AVG bytes), ${SECS} s per run, resolver on CPU 0, dnsperf on CPU 1 (-c 20 -q 200).
tandem shield $(git rev-parse --short HEAD 2>/dev/null || echo '?') (udp_workers = 1), $(unbound -V | head -1) (num-threads: 1), dnsperf $(dnsperf -h 2>&1 | awk '/Version/ { print $2 }').

| measure | tandem shield | Unbound | shield / Unbound |
|---|---:|---:|---:|
| cache-hit queries/s | $S_QPS | $U_QPS | $(ratio "$S_QPS" "$U_QPS") |
| cache-hit p99 answer time (ms) at that load | $S_P99 | $U_P99 | $(ratio "$S_P99" "$U_P99") |
| blocked-name queries/s | $S_BQPS | $U_BQPS | $(ratio "$S_BQPS" "$U_BQPS") |
| blocked-name p99 (ms) | $S_BP99 | $U_BP99 | $(ratio "$S_BP99" "$U_BP99") |
| resident memory per blocked name (bytes) | $(per "$S0" "$S1") | $(per "$U0" "$U1") | $(ratio "$(per "$S0" "$S1")" "$(per "$U0" "$U1")") |
| RSS without / with the list (MiB) | $((S0 / 1024)) / $((S1 / 1024)) | $((U0 / 1024)) / $((U1 / 1024)) | |
| start-up with the list (s) | $(secs "$T0" "$T1") | $(secs "$T2" "$T3") | |
EOF
