#!/usr/bin/env python3
"""Prints chaos run reports as one Markdown table, a row per run.

    chaos_summary.py REPORT.json...

Each REPORT.json is what `shopfleet chaos run --report` writes.
"""
import json
import sys


def row(path):
    with open(path) as f:
        r = json.load(f)
    s = r["scenario"]
    orders = r["orders"]
    cancelled = orders["cancelled"]
    faults = r["faults"]
    kinds = {}
    for fault in faults:
        kinds[fault["kind"]] = kinds.get(fault["kind"], 0) + 1
    fault_cancels = cancelled.get("other", 0)
    settled = "%.1f s" % r["settled"] if "settled" in r else "—"
    return "| %s | %s | %d | %d | %d | %d / %d / %d | %d | %d kills, %s | %d | %d | %.1f s | %s | %.1f s | %d s |" % (
        s["seed"], s["replicas"], orders["tried"], orders["accepted"], orders["completed"],
        cancelled.get("out of stock", 0), cancelled.get("payment declined", 0), cancelled.get("cancelled by the customer", 0),
        fault_cancels, kinds.get("kill", 0),
        ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items()) if k != "kill"),
        r["restarts"], len(r["violations"]), r["recovery"], settled, r["quietAfter"], r["seconds"])


def main(paths):
    print("| seed | replicas | tried | accepted | completed | cancelled: out of stock / declined / customer | cancelled by a fault | faults | restarts | violations | last fault → last order ended | → orders accepted by then ended | → quiet | run |")
    print("|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        print(row(path))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: chaos_summary.py REPORT.json...")
    main(sys.argv[1:])
