#!/usr/bin/env python3
"""How much of an order's CPU is spent outside the workers, from `shopfleet bench checkout --json` output.

    python3 bench/cpu_floor.py [--phase saturation] [--target 6.5] RUN.jsonl [RUN.jsonl ...]

For each run (one `bench checkout --json` output per file), the machine's CPU per completed order
in the phase split into the five workers' share (the `worker:<role>` groups) and everything else,
with a column per other group the run reports (PostgreSQL, RabbitMQ, Redis, the stand-ins for the
outside world: the payments sandbox and the SMTP sink, the bench, other processes) and the
machine's busy time no process was charged with (`unattributed`: interrupts and softirqs, such as
loopback networking, and processes that ended during the phase). The part outside the workers is what the order would still cost if the
workers' own code cost nothing while sending the same messages and running the same statements:
a floor that only fewer messages and statements per order lower. Then the range and median of
each over the runs, and what `--target` (ms per order) leaves for the workers.

Phases: `saturation`; `fixed_rate` (the first rate of `--rate`); `fixed_rate@RATE` (the others).
"""
import argparse
import json
import statistics
import sys

PREFIX = "checkout.cpu_ms_per_order_"


def fail(message):
    sys.exit(f"cpu_floor: {message}")


def read(path, phase):
    """The run's CPU per order in `phase`: machine, workers, outside, unattributed, and each group
    but the workers' under its own name (as `bench checkout` names it)."""
    metric = PREFIX + phase
    values = {}
    try:
        f = open(path, encoding="utf-8")
    except OSError as error:
        fail(f"{path}: cannot read it: {error.strerror}")
    with f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            fail(f"{path}: not UTF-8 text: is this `bench checkout --json` output?")
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{path}:{number}: not a JSON line ({error.msg}): is this `bench checkout --json` output?")
        if not (isinstance(row, dict) and "metric" in row and "value" in row):
            continue
        value = row["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{path}:{number}: {row['metric']} has the value {value!r}, not a number")
        if row["metric"] in values:
            fail(f"{path}:{number}: {row['metric']} again: more than one run in this file (one `bench checkout --json` per file)")
        values[row["metric"]] = float(value)
    if metric not in values:
        phases = sorted({key[len(PREFIX):] for key in values if key.startswith(PREFIX) and "." not in key[len(PREFIX):]})
        fail(f"{path}: no {metric} row: " + (f"its phases are {', '.join(phases)}" if phases
                                             else "not a `shopfleet bench checkout --json` run"))
    machine = values[metric]
    if machine <= 0:
        fail(f"{path}: {metric} is {machine:g}: a phase that used no CPU cannot be split")
    groups = {key[len(metric) + 1:]: value for key, value in values.items() if key.startswith(metric + ".")}
    workers = sum(value for key, value in groups.items() if key.startswith("worker"))
    run = {key: value for key, value in groups.items() if not key.startswith("worker")}
    run.update({"orders/s": values.get("checkout.orders_" + phase), "machine": machine, "workers": workers,
                "outside": machine - workers, "unattributed": machine - sum(groups.values())})
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.jsonl")
    parser.add_argument("--phase", default="saturation",
                        help="saturation (default); fixed_rate for the first rate of --rate, fixed_rate@RATE for the others")
    parser.add_argument("--target", type=float, default=6.5, help="machine CPU per order to compare with, ms (default 6.5)")
    args = parser.parse_args()

    runs = [(path, read(path, args.phase)) for path in args.runs]
    # The groups outside the workers that any run reports, the costliest first; a run without
    # one counts it as 0.
    fixed = ["orders/s", "machine", "workers", "outside", "unattributed"]
    others = {key for _, run in runs for key in run if key not in fixed}
    for _, run in runs:
        for key in others:
            run.setdefault(key, 0.0)
    columns = fixed[:4] + sorted(others, key=lambda key: -statistics.median(run[key] for _, run in runs)) + ["unattributed"]
    width = max(len("median"), *(len(path) for path, _ in runs))
    print(f"ms of CPU per completed order, phase {args.phase}; 'outside' = the machine's minus the workers'")
    print(f"{'run':<{width}}  " + "  ".join(f"{c:>12}" for c in columns))
    for path, run in runs:
        cells = ["" if run[c] is None else f"{run[c]:.2f}" for c in columns]
        print(f"{path:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    if len(runs) > 1:
        for name, pick in (("min", min), ("median", statistics.median), ("max", max)):
            cells = []
            for c in columns:
                present = [run[c] for _, run in runs if run[c] is not None]
                cells.append(f"{pick(present):.2f}" if present else "")
            print(f"{name:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    outside = [run["outside"] for _, run in runs]
    shares = [run["outside"] / run["machine"] for _, run in runs]
    above = sum(1 for value in outside if value > args.target)
    print(f"outside the workers: {min(outside):.2f}-{max(outside):.2f} ms per order "
          f"({min(shares):.0%}-{max(shares):.0%} of the machine's), above {args.target:g} ms in {above} of {len(runs)} runs; "
          f"a target of {args.target:g} ms leaves the workers {args.target - max(outside):.2f} to {args.target - min(outside):.2f} ms per order")


if __name__ == "__main__":
    main()
