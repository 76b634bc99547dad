#!/usr/bin/env python3
"""How much of an order's CPU is spent outside the workers, from `shopfleet bench checkout --json` output.

    python3 bench/cpu_floor.py [--phase saturation] [--target 6.5] RUN.jsonl [RUN.jsonl ...]

For each run, the machine's CPU per completed order in the phase (`saturation`, `fixed_rate`,
`fixed_rate@150`, ...) split into the five workers' share and everything else: PostgreSQL,
RabbitMQ, Redis, the stand-ins for the outside world (the payments sandbox, the SMTP sink) and
the bench with whatever else ran. The part outside the workers is what the order would still
cost if the workers' own code cost nothing while sending the same messages and running the same
statements: a floor that only fewer messages and statements per order lower. Then the range
and median of each over the runs, and what `--target` (ms per order) leaves for the workers.
"""
import argparse
import json
import statistics
import sys

OUTSIDE = [
    ("postgres", "PostgreSQL"),
    ("rabbitmq", "RabbitMQ"),
    ("redis", "Redis"),
    ("sandbox", "payments sandbox"),
    ("mail-sink", "SMTP sink"),
    ("bench", "bench"),
    ("other", "other"),
]


def read(path, phase):
    metric = "checkout.cpu_ms_per_order_" + phase
    values = {}
    try:
        f = open(path)
    except OSError as error:
        sys.exit(f"{path}: cannot read it: {error.strerror}")
    with f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                sys.exit(f"{path}:{number}: not a JSON line ({error.msg}): is this `bench checkout --json` output?")
            if isinstance(row, dict) and "metric" in row and "value" in row:
                values[row["metric"]] = row["value"]
    if metric not in values:
        sys.exit(f"{path}: no {metric} row: not a `shopfleet bench checkout --json` run, or no '{phase}' phase in it")
    groups = {key[len(metric) + 1:]: value for key, value in values.items() if key.startswith(metric + ".")}
    workers = sum(value for key, value in groups.items() if key.startswith("worker"))
    outside = {key: groups.get(key, 0.0) for key, _ in OUTSIDE}
    unknown = sorted(key for key in groups if not key.startswith("worker") and key not in outside)
    if unknown:
        sys.exit(f"{path}: process groups this script does not know: {', '.join(unknown)}")
    return {
        "machine": values[metric],
        "workers": workers,
        **outside,
        "outside": sum(outside.values()),
        "orders/s": values.get("checkout.orders_" + phase),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.jsonl")
    parser.add_argument("--phase", default="saturation", help="saturation (default), fixed_rate, fixed_rate@RATE")
    parser.add_argument("--target", type=float, default=6.5, help="machine CPU per order to compare with, ms (default 6.5)")
    args = parser.parse_args()

    columns = ["orders/s", "machine", "workers", "outside"] + [key for key, _ in OUTSIDE]
    runs = [(path, read(path, args.phase)) for path in args.runs]
    width = max(len(path) for path, _ in runs)
    print(f"ms of CPU per completed order, phase {args.phase}; 'outside' = everything but the workers")
    print(f"{'run':<{width}}  " + "  ".join(f"{c:>9}" for c in columns))
    for path, run in runs:
        cells = ["" if run[c] is None else f"{run[c]:9.2f}" for c in columns]
        print(f"{path:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    if len(runs) > 1:
        for name, pick in (("min", min), ("median", statistics.median), ("max", max)):
            cells = []
            for c in columns:
                present = [run[c] for _, run in runs if run[c] is not None]
                cells.append(f"{pick(present):9.2f}" if present else "")
            print(f"{name:<{width}}  " + "  ".join(f"{c:>9}" for c in cells))
    outside = [run["outside"] for _, run in runs]
    shares = [run["outside"] / run["machine"] for _, run in runs if run["machine"] > 0]
    left = [args.target - value for value in outside]
    print(f"outside the workers: {min(outside):.2f}-{max(outside):.2f} ms per order "
          f"({min(shares):.0%}-{max(shares):.0%} of the machine's); a target of {args.target:g} ms leaves the "
          f"workers {min(left):.2f} to {max(left):.2f} ms per order")


if __name__ == "__main__":
    main()
