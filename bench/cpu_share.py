#!/usr/bin/env python3
"""CPU seconds used per second by RabbitMQ, PostgreSQL, pgbench and shopfleet, from /proc.

Run it beside a benchmark to see who has the cores:

    python3 bench/cpu_share.py 30 &
    .build/release/shopfleet bench worker --messages 15000 --rounds 1 --only tx

Prints one line per second: beam (RabbitMQ), pg (all PostgreSQL processes), pgbench, sf (shopfleet
and its threads), other. 1.00 is one core busy for the whole second.
"""
import os
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def group(name):
    if "beam" in name:
        return "beam"
    if name.startswith("postgres"):
        return "pg"
    if "pgbench" in name:
        return "pgbench"
    if "shopfleet" in name or "shopfl" in name or "qos" in name:  # Swift's pool threads are named com.apple.root.*-qos
        return "sf"
    return "other"


def sample():
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seen[pid] = (group(name), (int(fields[11]) + int(fields[12])) / TICKS)
    return seen


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    before = sample()
    for second in range(seconds):
        time.sleep(1)
        now = sample()
        totals = {}
        for pid, (name, cpu) in now.items():
            totals[name] = totals.get(name, 0) + cpu - before.get(pid, (name, 0))[1]
        before = now
        print(second, " ".join(f"{k}={v:.2f}" for k, v in sorted(totals.items())), flush=True)


if __name__ == "__main__":
    main()
