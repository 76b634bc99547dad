#!/usr/bin/env python3
"""Draws a chaos run: orders accepted and finished over time, with a marker per fault.

    chaos_plot.py REPORT.json OUT.png

REPORT.json is what `shopfleet chaos run --report` writes. Kills are ticks along the bottom; a
restart, an outage, a frozen worker or a gateway fault is a band as long as it lasted.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BANDS = {
    "rabbitmq": ("#d62728", "RabbitMQ restart"),
    "postgres": ("#9467bd", "PostgreSQL stop"),
    "redis": ("#8c564b", "Redis restart"),
    "freeze": ("#17becf", "worker frozen (SIGSTOP)"),
    "gateway": ("#bcbd22", "gateway fault"),
}


def cumulative(times):
    xs, ys = [0.0], [0]
    for count, t in enumerate(sorted(times), start=1):
        xs.append(t)
        ys.append(count)
    return xs, ys


def main(report_path, out_path):
    with open(report_path) as f:
        report = json.load(f)
    scenario = report["scenario"]
    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    for times, label, color in ((timeline["accepted"], "orders accepted (202)", "#1f77b4"),
                                (timeline["finished"], "orders finished (completed or cancelled)", "#2ca02c")):
        xs, ys = cumulative(times)
        ax.step(xs, ys, where="post", label=label, color=color, linewidth=1.8)
    top = max(len(timeline["accepted"]), 1)
    shown = set()
    for fault in report["faults"]:
        kind = fault["kind"]
        if kind == "kill":
            ax.plot([fault["at"], fault["at"]], [0, top * 0.03], color="#555555", linewidth=0.8,
                    label=None if "kill" in shown else "process killed (SIGKILL)")
            shown.add("kill")
            continue
        color, label = BANDS.get(kind, ("#7f7f7f", kind))
        start = fault.get("down") or fault["at"]
        if fault.get("down") is not None:
            # A graceful stop: the server still served while it shut down.
            ax.axvspan(fault["at"], start, color=color, alpha=0.07)
        ax.axvspan(start, max(fault["until"], start + 0.5), color=color, alpha=0.2,
                   label=None if kind in shown else label)
        shown.add(kind)
    ax.axvline(report["lastFaultOver"], color="#444444", linestyle="--", linewidth=0.9, label="last fault over")
    ax.set_xlabel("seconds from the first order")
    ax.set_ylabel("orders")
    verdict = "passed" if not report["violations"] else "%d violations" % len(report["violations"])
    ax.set_title("shopfleet chaos run '%s', seed %s, replicas %s: %s, recovered %.1f s after the last fault"
                 % (scenario["name"], scenario["seed"], scenario["replicas"], verdict, report["recovery"]), fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chaos_plot.py REPORT.json OUT.png")
    main(sys.argv[1], sys.argv[2])
