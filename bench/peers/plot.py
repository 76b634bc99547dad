#!/usr/bin/env python3
"""Charts of the checkout comparison: latency against offered rate, and CPU per order by process group.

    .shopfleet/tools-venv/bin/python bench/peers/plot.py bench/results/peers-DATE.jsonl [MORE.jsonl ...]
        [--out-dir docs] [--before OLD.jsonl [LABEL] --after NEW.jsonl [LABEL]]

Reads the rows compare.py writes (several files pool their rounds) and draws, each figure the
median over rounds:

    checkout-latency.png   p50 and p99 of place → completed against offered rate, per system,
                           with the system's saturation throughput as a dashed line (the knee)
    checkout-cpu.png       CPU per order in the burst, stacked by process group, per system
    checkout-cpu-before-after.png   with --before/--after: Shopfleet's CPU per order by group in
                           two sets of runs (compare.py rows, or `shopfleet bench checkout --json`
                           output saved as it is), side by side

Groups under 0.1 ms per order in every bar of a chart are merged into "other".
"""
import argparse
import json
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from compare import SYSTEMS, normalise  # noqa: E402

NAMES = {"shopfleet": "Shopfleet", "temporal": "Temporal", "dbos": "DBOS"}
COLORS = {"shopfleet": "#1f77b4", "temporal": "#d62728", "dbos": "#2ca02c"}
TINY_MS = 0.1
KEPT_UP = 0.95  # a fixed rate whose orders/s fell below this share of the offered one was not kept up with
SATURATION_CPU = "cpu_ms_per_order_saturation"

# Stacking order (the servers at the bottom, the load generator and the rest on top) and colours;
# Shopfleet's workers take shades of green, one per role.
GROUPS = {
    "postgres": ("#4c72b0", "PostgreSQL"),
    "rabbitmq": ("#dd8452", "RabbitMQ"),
    "redis": ("#c44e52", "Redis"),
    "temporal-server": ("#8172b3", "Temporal server"),
    "peer-worker": ("#55a868", "workflow worker (Python)"),
    "worker:": (None, "worker: {}"),
    "sandbox": ("#937860", "payments sandbox"),
    "mail-sink": ("#da8bc3", "SMTP sink"),
    "edge": ("#8c613c", "edge"),
    "shopfleet": ("#64b5cd", "shopfleet (other commands)"),
    "bench": ("#b0b0b0", "load generator (bench)"),
    "driver": ("#b0b0b0", "load generator (driver)"),
    "other": ("#e5e5e5", "other processes"),
}


def load(paths):
    """Rows {round, system, metric, unit, value}. A file of `shopfleet bench checkout --json`
    output (no "system" field) counts as one Shopfleet round."""
    rows = []
    for path in paths:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        parsed = [json.loads(line) for line in lines]
        if parsed and all("system" in row for row in parsed):
            rows += parsed
        else:
            rows += normalise("shopfleet", lines, 1)
    return rows


def medians(rows):
    """{system: {metric: median over rounds}}, systems in SYSTEMS' order first."""
    values = {}
    for row in rows:
        values.setdefault(row["system"], {}).setdefault(row["metric"], []).append(row["value"])
    order = [s for s in SYSTEMS if s in values] + sorted(set(values) - set(SYSTEMS))
    return {s: {m: statistics.median(v) for m, v in values[s].items()} for s in order}


def rounds(rows, system):
    """Runs of a system that reached the burst (files pooled together may repeat round numbers)."""
    return sum(row["system"] == system and row["metric"] == "orders_saturation" for row in rows)


# ---------------------------------------------------------------- latency against offered rate


def fixed_points(metrics, name):
    """[(offered rate, value)] of name@R, by rate."""
    pattern = re.compile(rf"^{re.escape(name)}@(\d+)$")
    return sorted((int(m[1]), v) for m, v in ((pattern.match(k), v) for k, v in metrics.items()) if m)


def latency_chart(stats, runs, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), dpi=110, sharey=True)
    offered, knees = set(), []
    for ax, percentile in zip(axes, ("p50", "p99")):
        for system, metrics in stats.items():
            points = fixed_points(metrics, f"latency_{percentile}")
            if not points:
                continue
            color, name = COLORS.get(system, "#7f7f7f"), NAMES.get(system, system)
            xs, ys = zip(*points)
            offered.update(xs)
            ax.plot(xs, ys, marker="o", color=color, linewidth=1.8, label=f"{name} ({runs[system]} rounds)")
            # Above its knee a system falls behind the schedule and the queue, not the work, sets the latency.
            behind = [(x, y) for x, y in points if metrics.get(f"orders@{x}", x) < KEPT_UP * x]
            if behind:
                ax.scatter(*zip(*behind), s=70, facecolors="white", edgecolors=color, linewidths=1.8, zorder=3)
            saturation = metrics.get("orders_saturation")
            if saturation:
                knees.append(saturation)
                ax.axvline(saturation, color=color, linestyle="--", linewidth=1.2, alpha=0.8,
                           label=f"{name} saturation: {saturation:.0f} orders/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{percentile} latency")
        ax.set_xlabel("offered rate (orders/s, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    if not offered:
        plt.close(fig)
        print(f"plot.py: no latency_p50@R rows: {path} not drawn", file=sys.stderr)
        return
    for ax in axes:
        ax.set_xlim(min(offered) * 0.8, max(list(offered) + knees) * 1.25)
        ax.set_xticks(sorted(offered))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("place → order completed (ms, log scale)")
    axes[0].yaxis.set_major_formatter(ScalarFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="#555555"))
    labels.append(f"fell behind (under {KEPT_UP:.0%} of the offered rate)")
    fig.legend(handles, labels, fontsize=8.5, loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Checkout latency against offered rate (median over rounds);"
                 " dashed: throughput at saturation, the knee")
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # the legend below, off the lines
    fig.savefig(path)
    plt.close(fig)
    print(path)


# ---------------------------------------------------------------- CPU per order by process group


def cpu_groups(metrics):
    prefix = SATURATION_CPU + "."
    return {m[len(prefix):]: v for m, v in metrics.items() if m.startswith(prefix)}


def merge_tiny(bars):
    """Groups under TINY_MS in every bar go into "other" (a group small in one bar only stays, so
    bars stay comparable)."""
    tiny = {g for _, groups, _ in bars for g in groups if all(b.get(g, 0.0) < TINY_MS for _, b, _ in bars)} - {"other"}
    merged = []
    for label, groups, machine in bars:
        kept = {g: v for g, v in groups.items() if g not in tiny}
        kept["other"] = kept.get("other", 0.0) + sum(groups[g] for g in tiny if g in groups)
        merged.append((label, kept, machine))
    return merged


def group_style(group, workers):
    """(colour, legend label, hatch) of a group."""
    if group.startswith("worker:"):
        shade = plt.get_cmap("Greens")(0.45 + 0.45 * workers.index(group) / max(1, len(workers) - 1))
        return shade, f"worker {group[len('worker:'):]}", None
    color, label = GROUPS.get(group, ("#7f7f7f", group))
    return color, label, "//" if group in ("bench", "driver") else None


def stack_order(groups):
    keys = list(GROUPS)
    def rank(g):
        return (keys.index("worker:"), g) if g.startswith("worker:") else (keys.index(g) if g in keys else len(keys), g)
    return sorted(groups, key=rank)


def stack(ax, bars, groups, workers, scale):
    """One stacked bar per entry of bars; each segment labelled if tall enough to hold its text.
    scale(bar) is what a bar's values are divided by (1 for ms, its total / 100 for shares)."""
    xs = range(len(bars))
    tops = [sum(b.values()) / scale(b) for _, b, _ in bars]
    below = [0.0] * len(bars)
    for group in groups:
        color, label, hatch = group_style(group, workers)
        heights = [b.get(group, 0.0) / scale(b) for _, b, _ in bars]
        ax.bar(xs, heights, bottom=below, width=0.6, color=color, hatch=hatch, edgecolor="white", linewidth=0.6, label=label)
        for x, bottom, height in zip(xs, below, heights):
            if height >= 0.045 * max(tops):
                ax.text(x, bottom + height / 2, f"{height:.1f}", ha="center", va="center", fontsize=8)
        below = [b + h for b, h in zip(below, heights)]
    ax.set_xticks(list(xs), [label for label, _, _ in bars])
    ax.set_ylim(0, max(tops) * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    return tops


def cpu_chart(bars, title, path, shares=False):
    """bars: [(label, {group: ms per order}, machine ms per order or None)], stacked; with shares,
    a second panel gives each bar's groups in percent, so a small bar's make-up can be read too."""
    bars = [b for b in bars if b[1]]
    if not bars:
        print(f"plot.py: no {SATURATION_CPU}.GROUP rows: {path} not drawn", file=sys.stderr)
        return
    bars = merge_tiny(bars)
    groups = stack_order({g for _, b, _ in bars for g in b})
    workers = [g for g in groups if g.startswith("worker:")]
    panels = 2 if shares else 1
    fig, axes = plt.subplots(1, panels, figsize=(1.6 * len(bars) * panels + 5, 6), dpi=110, squeeze=False)
    axes = axes[0]
    tops = stack(axes[0], bars, groups, workers, lambda b: 1.0)
    for x, (top, (_, _, machine)) in enumerate(zip(tops, bars)):
        note = f"{top:.1f} ms" + (f"\n(machine {machine:.1f})" if machine else "")
        axes[0].text(x, top + max(tops) * 0.015, note, ha="center", va="bottom", fontsize=8.5)
    axes[0].set_ylabel("CPU per order at saturation (ms, all cores)")
    if shares:
        stack(axes[1], bars, groups, workers, lambda b: sum(b.values()) / 100)
        axes[1].set_ylim(0, 100)
        axes[1].set_ylabel("share of the bar's CPU (%)")
        axes[1].set_title("the same, as shares", fontsize=10)
    # One legend entry per label (bench and driver share one), the top of the stack first.
    entries = dict(zip(*reversed(axes[0].get_legend_handles_labels())))
    fig.legend(list(entries.values())[::-1], list(entries)[::-1], fontsize=8, loc="center right", frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.8 if panels == 1 else 0.84, 1))
    fig.savefig(path)
    plt.close(fig)
    print(path)


def file_and_label(values):
    if len(values) > 2:
        raise SystemExit(f"plot.py: want FILE [LABEL], got {' '.join(values)}")
    return values[0], values[1] if len(values) == 2 else os.path.splitext(os.path.basename(values[0]))[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="rows from compare.py (.jsonl)")
    parser.add_argument("--out-dir", default="docs", help="where the PNGs go (default docs/)")
    parser.add_argument("--before", nargs="+", metavar="FILE [LABEL]", help="Shopfleet's runs before a change")
    parser.add_argument("--after", nargs="+", metavar="FILE [LABEL]", help="Shopfleet's runs after it")
    args = parser.parse_args()
    if bool(args.before) != bool(args.after):
        parser.error("--before and --after go together")
    if not args.files and not args.before:
        parser.error("give compare.py's .jsonl files, or --before and --after")
    os.makedirs(args.out_dir, exist_ok=True)

    if args.files:
        rows = load(args.files)
        stats = medians(rows)
        runs = {system: rounds(rows, system) for system in stats}
        latency_chart(stats, runs, os.path.join(args.out_dir, "checkout-latency.png"))
        cpu_chart([(f"{NAMES.get(s, s)}\n{stats[s].get('orders_saturation', 0):.0f} orders/s", cpu_groups(m), m.get(SATURATION_CPU))
                   for s, m in stats.items()],
                  "Checkout CPU per order by process group, at saturation (median over rounds)",
                  os.path.join(args.out_dir, "checkout-cpu.png"), shares=True)

    if args.before:
        bars = []
        for values in (args.before, args.after):
            path, label = file_and_label(values)
            metrics = medians(load([path])).get("shopfleet", {})
            if not metrics:
                raise SystemExit(f"plot.py: {path} has no Shopfleet rows")
            bars.append((f"{label}\n{metrics.get('orders_saturation', 0):.0f} orders/s", cpu_groups(metrics), metrics.get(SATURATION_CPU)))
        cpu_chart(bars, "Shopfleet checkout CPU per order by process group, at saturation",
                  os.path.join(args.out_dir, "checkout-cpu-before-after.png"))


if __name__ == "__main__":
    main()
