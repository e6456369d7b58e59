#!/usr/bin/env python3
"""Turns the figures the steering tests print into bench/steering/results.md:
median (min-max) over the runs, with the date, machine and commit."""
import datetime, platform, re, statistics, subprocess, sys

log, runs, command = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]

def dur_ms(s):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", s)
    if not m:
        return None
    v, u = float(m.group(1)), m.group(2)
    return v * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}[u]

figs = {}
def add(key, v):
    if v is not None:
        figs.setdefault(key, []).append(v)

restores = {"dsl": [], "lte": []}
for line in log.splitlines():
    if m := re.search(r"bytes in ([0-9.]+) s \(([0-9.]+) Mbit/s\), longest stall (\d+) ms", line):
        add("failover: longest stall of one 240 MB download across 4 link failures (ms)", float(m.group(3)))
        add("failover: that download's rate (Mbit/s)", float(m.group(2)))
    if m := re.search(r"(dsl|lte) carrying again Some\(([^)]+)\)", line):
        restores[m.group(1)].append(dur_ms(m.group(2)))
    if m := re.search(r"steady 5.6 Mbit/s: ([0-9.]+) Mbit/s, mobile share ([0-9.]+) %", line):
        add("priority: mobile share of a steady 5.6 Mbit/s stream (70 % of the fixed line) (%)", float(m.group(2)))
    if m := re.search(r"^bulk: ([0-9.]+) Mbit/s, mobile share ([0-9.]+) %", line.split("... ")[-1]):
        add("priority: bulk download (Mbit/s)", float(m.group(1)))
        add("priority: mobile share of the bulk download (%)", float(m.group(2)))
    if m := re.search(r"active-standby bulk: ([0-9.]+) Mbit/s, mobile share ([0-9.]+) %", line):
        add("active-standby: mobile share of a bulk download (%)", float(m.group(2)))
    if m := re.search(r"after the blackhole: dsl \d+ B, lte \d+ B, longest stall (\d+) ms", line):
        add("active-standby: longest stall when the fixed line blackholes (ms)", float(m.group(1)))
    if m := re.search(r"aggregate bulk: ([0-9.]+) Mbit/s, mobile share ([0-9.]+) %", line):
        add("aggregate: bulk download (Mbit/s)", float(m.group(1)))
    if m := re.search(r"UDP on the mobile link Some\(([^)]+)\) after the cut, back on the fixed line Some\(([^)]+)\) after the restore; DNS: (\d+) of (\d+) failed", line):
        add("UDP: on the mobile link after the fixed line fails (ms)", dur_ms(m.group(1)))
        add("UDP: back on the fixed line after it returns (ms)", dur_ms(m.group(2)))
        add("DNS queries failed during the UDP failover (of 60)", float(m.group(3)))
    if m := re.search(r"budget (\d+): the mobile link carried (\d+) B \(([0-9.]+) %\), the CPE counted (\d+)", line):
        add("budget: mobile bytes carried, % of a 40 MB budget (overrun allowed: 1 %)", float(m.group(3)))
        add("budget: CPE count vs the link's own counter (%)", 100.0 * int(m.group(4)) / int(m.group(2)))
    if m := re.search(r"the HAG counted (\d+) B on the mobile link", line):
        add("budget: the HAG's (billing) count of the same bytes, % of the budget", int(m.group(1)) / 400000.0)

# Restores come in test order per run: cut, then blackhole, for each link.
for link, vals in restores.items():
    name = {"dsl": "fixed line", "lte": "mobile link"}[link]
    for i, v in enumerate(vals):
        kind = "cut" if i % 2 == 0 else "blackhole"
        add(f"failover: {name} carrying again after a {kind} ends (ms)", v)

def num(x):
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"

def show(v):
    med = statistics.median(v)
    if len(v) == 1:
        return num(med), len(v)
    return f"{num(med)} ({num(min(v))}–{num(max(v))})", len(v)

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
# The results file being rewritten does not make the measured code dirty.
dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench/steering/results.md"],
                       capture_output=True, text=True).stdout.strip()
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
print("# Steering, failover, UDP and the mobile budget: measured\n")
print(f"Measured {datetime.date.today()} on {platform.platform()}, {cpu}; commit `{commit}{'+dirty' if dirty else ''}`; "
      f"{runs} run(s) of the end-to-end tests in `crates/tandem/tests/steering.rs` (release build). "
      f"Reproduce with `{command}` (as root).\n")
print("Lab profiles: `rural` (fixed line 8/1 Mbit/s 15 ms, mobile 30/10 Mbit/s 45 ms) for failover, priority, "
      "active-standby, aggregate and UDP; `suburban` (30/5, 60/20 Mbit/s) for the budget. Shares are of the bytes "
      "the links' own interface counters carried towards the home; stalls are the longest gap between two reads of "
      "the client in the home. Figures: median (min–max) over the runs.\n")
print("| figure | value | runs |\n|---|---|---|")
for k, v in figs.items():
    s, n = show(v)
    print(f"| {k} | {s} | {n} |")
print("\nBaselines measured side by side in `make bench` ([`bench/results/`](../results/)): the fixed line alone stalls "
      "for the whole outage when it is cut; the kernel's MPTCP without Tandem's path manager took 2.8 s to use a restored "
      "fixed line again after a 6 s blackhole (measured while building this; Tandem: the restore figures above).")
print("\nThe tests assert, as generous guards: stall < 1 s, each link carrying again < 2 s after its restore, "
      "priority share < 1 %, UDP on the mobile link < 1 s, no DNS failure, the budget overrun ≤ 1 %.")
