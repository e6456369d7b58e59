#!/usr/bin/env python3
"""Compares the quick-bench JSONs of bench/ab/run.sh: for every figure the
median over the runs of each side, and new / old. Reads OUT_DIR/{old,new}-N/*.json.

    python3 bench/ab/compare.py target/bench-ab
"""
import glob
import json
import statistics
import sys


def figures(doc):
    """(name, value) of every measured median in one result file."""
    out = []
    for b in doc.get("bulk", []):
        key = f"bulk {b['direction']} {b['flows']} flow(s), {b['contender']}, Mbit/s"
        out.append((key, b["mbit"]["median"]))
    for t in doc.get("ttfb", []):
        out.append((f"time to first byte, {t['contender']}, ms", t["ttfb_ms"]["median"]))
        out.append((f"small fetch, {t['contender']}, ms", t["small_ms"]["median"]))
    for w in doc.get("web", []):
        out.append((f"web page, {w['contender']}, s", w["secs"]["median"]))
    for l in doc.get("latency", []):
        out.append((f"latency under load (median), {l['contender']}, ms", l["loaded_median_ms"]["median"]))
        out.append((f"latency under load (p99), {l['contender']}, ms", l["loaded_p99_ms"]["median"]))
    for f in doc.get("failover", []):
        out.append((f"failover stall, {f['contender']}, ms", f["stall_ms"]["median"]))
    rc = doc.get("relay_cost")
    if isinstance(rc, dict):
        for key in ("hag", "haproxy"):
            r = rc.get(key)
            if not isinstance(r, dict):
                continue
            for k, v in r.items():
                if isinstance(v, dict) and "median" in v:
                    out.append((f"relay cost, {r.get('relay', key)}: {k}", v["median"]))
    return [(k, v) for k, v in out if isinstance(v, (int, float))]


def side(root, name):
    runs = {}
    for path in sorted(glob.glob(f"{root}/{name}-*/*.json")):
        with open(path) as f:
            doc = json.load(f)
        for k, v in figures(doc):
            runs.setdefault(k, []).append(v)
    return runs


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/bench-ab"
    old, new = side(root, "old"), side(root, "new")
    if not old or not new:
        sys.exit(f"no results under {root}/old-* and {root}/new-*")
    print("| figure | old (median of runs) | new | new / old |")
    print("|---|---|---|---|")
    for k in old:
        if k not in new:
            print(f"| {k} | {statistics.median(old[k]):.4g} | (missing) | |")
            continue
        o, n = statistics.median(old[k]), statistics.median(new[k])
        ratio = f"{n / o:.3f}" if o else "—"
        print(f"| {k} | {o:.4g} ({len(old[k])}) | {n:.4g} ({len(new[k])}) | {ratio} |")
    for k in new:
        if k not in old:
            print(f"| {k} | (missing) | {statistics.median(new[k]):.4g} | |")


if __name__ == "__main__":
    main()
