#!/usr/bin/env python3
"""Shopfleet's checkout beside the same checkout on Temporal and DBOS, in alternating rounds.

    eval "$(scripts/servers.sh env test)"
    .shopfleet/tools-venv/bin/python bench/peers/compare.py [--rounds 2] [--seconds 15] [--orders 600]
        [--shopfleet-rates 5,10,20,50,100] [--peer-rates 5,10,20] [--systems shopfleet,temporal,dbos]
        [--out bench/results/peers-DATE.jsonl]

Each round runs every system once, and the order rotates between rounds (S,T,D then T,D,S ...)
so that no system always runs on a machine warmed, or disturbed, by the same neighbour. Peers
place no declined cards (--declined 0), as Shopfleet's bench does.

Every run's JSON lines become rows {"round", "system", "metric", "unit", "value"} under names
common to the three benches:

    orders@R, latency_p50@R, latency_p99@R, cpu_ms_per_order@R, cpu_ms_per_order@R.GROUP
    orders_saturation, latency_p50_saturation, latency_p99_saturation,
    cpu_ms_per_order_saturation, cpu_ms_per_order_saturation.GROUP
    confirmed_p50@R, confirmed_p99@R, confirmed_p50_saturation, ... (place → OrderConfirmed)
    messages_per_order (Shopfleet), commits_per_order

latency_* is always place → order completed (Shopfleet's latency_completed_*, the peers'
workflow result). Any other metric is kept as "raw:" + its own name. The rows go to --out as
each run ends, so an interrupted comparison keeps what it measured; a markdown table goes to
stdout at the end. Exits non-zero if any run failed (the other runs still go ahead).
"""
import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHOPFLEET = os.path.join(ROOT, ".build", "release", "shopfleet")
RUN_PEER = os.path.join(HERE, "run.py")
SYSTEMS = ("shopfleet", "temporal", "dbos")
NEEDED_ENV = ("SHOPFLEET_DATABASE_URL", "SHOPFLEET_AMQP_URL", "SHOPFLEET_AMQP_MANAGEMENT_URL", "SHOPFLEET_PYTHON")

# ---------------------------------------------------------------- common metric names

# checkout.<name>_<phase>[.<group>]: the first fixed rate has no "@R" (the names earlier runs used).
SHOPFLEET_PHASE = re.compile(
    r"^checkout\.(?P<name>orders|latency_completed_p50|latency_completed_p99|latency_p50|latency_p99|cpu_ms_per_order)"
    r"_(?:fixed_rate(?:@(?P<rate>\d+))?|(?P<saturation>saturation))(?:\.(?P<group>.+))?$")
SHOPFLEET_NAMES = {"orders": "orders", "latency_completed_p50": "latency_p50", "latency_completed_p99": "latency_p99",
                   "latency_p50": "confirmed_p50", "latency_p99": "confirmed_p99", "cpu_ms_per_order": "cpu_ms_per_order"}
SHOPFLEET_TOTALS = {"checkout.messages_published_per_order": "messages_per_order",
                    "checkout.transactions_per_order": "commits_per_order"}

# <name>[.<group>]@R at a fixed rate, <name>_saturation[.<group>] in the burst (driver.phase_rows).
PEER_PHASE = re.compile(
    r"^(?P<name>orders_fixed_rate|orders|latency_p50|latency_p99|confirm_latency_p50|confirm_latency_p99|cpu_ms_per_order)"
    r"(?:\.(?P<fixed_group>[^@]+))?(?:@(?P<rate>\d+)|_saturation)(?:\.(?P<group>.+))?$")
PEER_NAMES = {"orders_fixed_rate": "orders", "orders": "orders", "latency_p50": "latency_p50", "latency_p99": "latency_p99",
              "confirm_latency_p50": "confirmed_p50", "confirm_latency_p99": "confirmed_p99",
              "cpu_ms_per_order": "cpu_ms_per_order"}
PEER_TOTALS = {"pg_commits_per_order": "commits_per_order"}


def common_name(name, rate, group):
    """name@R[.group] for a fixed rate (rate given), name_saturation[.group] for the burst."""
    phase = f"@{rate}" if rate is not None else "_saturation"
    return name + phase + (f".{group}" if group else "")


def shopfleet_metric(metric, first_rate):
    match = SHOPFLEET_PHASE.match(metric)
    if match:
        rate = None if match["saturation"] else (match["rate"] or first_rate)
        return common_name(SHOPFLEET_NAMES[match["name"]], rate, match["group"])
    return SHOPFLEET_TOTALS.get(metric, "raw:" + metric)


def peer_metric(metric):
    match = PEER_PHASE.match(metric)
    if match:
        return common_name(PEER_NAMES[match["name"]], match["rate"], match["fixed_group"] or match["group"])
    return PEER_TOTALS.get(metric, "raw:" + metric)


def normalise(system, lines, round_number, first_rate=None):
    """The rows of one run's stdout; lines that are not JSON rows (a stray log line) are skipped.
    Shopfleet's first rate, when not given, is the baseline of its orders_fixed_rate row (the
    offered rate)."""
    raw = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "metric" in row and "value" in row:
                raw.append(row)
    if system == "shopfleet" and first_rate is None:
        first_rate = next((round(r["baseline"]) for r in raw if r["metric"] == "checkout.orders_fixed_rate"), None)
    rename = (lambda m: shopfleet_metric(m, first_rate)) if system == "shopfleet" else peer_metric
    return [{"round": round_number, "system": system, "metric": rename(r["metric"]), "unit": r["unit"], "value": r["value"]}
            for r in raw]


# ---------------------------------------------------------------- the runs


def rates(text):
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"want positive whole orders per second, comma-separated; got '{text}'")
    return values


def command(system, args):
    if system == "shopfleet":
        return [SHOPFLEET, "bench", "checkout", "--rate", ",".join(map(str, args.shopfleet_rates)),
                "--seconds", str(args.seconds), "--orders", str(args.orders), "--json"]
    return [sys.executable, RUN_PEER, system, "--rates", ",".join(map(str, args.peer_rates)), "--seconds", str(args.seconds),
            "--orders", str(args.orders), "--declined", "0", "--json"]


def run_once(system, args):
    """(exit code, stdout lines). Its stderr (progress, ledger checks) goes straight to ours. The
    child has a session of its own so that Ctrl-C reaches it once, from us, and it gets the time
    to tear down what it set up (run.py drops its databases); a second SIGINT would cut that short."""
    child = subprocess.Popen(command(system, args), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT, text=True,
                             start_new_session=True)
    try:
        output, _ = child.communicate()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    return child.returncode, output.splitlines()


def rotation(round_index, systems):
    """Round 0: S,T,D; round 1: T,D,S; ..."""
    shift = round_index % len(systems)
    return systems[shift:] + systems[:shift]


def default_out():
    """bench/results/peers-DATE.jsonl, or -2, -3 ... after it: an earlier run's file is kept."""
    stem = os.path.join(ROOT, "bench", "results", f"peers-{datetime.date.today().isoformat()}")
    path, n = stem + ".jsonl", 2
    while os.path.exists(path):
        path, n = f"{stem}-{n}.jsonl", n + 1
    return path


def check_setup(systems):
    problems = []
    missing = [name for name in NEEDED_ENV if not os.environ.get(name)]
    if missing:
        problems.append(f"{', '.join(missing)} not set: eval \"$(scripts/servers.sh env test)\" first")
    if "shopfleet" in systems and not os.access(SHOPFLEET, os.X_OK):
        problems.append(f"{os.path.relpath(SHOPFLEET, ROOT)} is missing: swift build -c release --product shopfleet")
    for problem in problems:
        print(f"compare.py: {problem}", file=sys.stderr)
    if problems:
        sys.exit(2)


# ---------------------------------------------------------------- the table


def table_metrics(compare_rate):
    names = [("orders_saturation", "orders/s"), ("cpu_ms_per_order_saturation", "ms")]
    if compare_rate is not None:
        names += [(f"latency_p50@{compare_rate}", "ms"), (f"latency_p99@{compare_rate}", "ms")]
    return names + [("latency_p50_saturation", "ms"), ("latency_p99_saturation", "ms")]


def number(value):
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def markdown(rows, systems, rounds, compare_rate):
    """Per metric and system: every round's value and their median; for a peer, its value over
    Shopfleet's in the same round (both ran minutes apart on the same machine) and the median of
    those ratios."""
    value = {(r["round"], r["system"], r["metric"]): r["value"] for r in rows}
    head = (["metric", "system"] + [f"round {n}" for n in rounds] + ["median"]
            + [f"÷ Shopfleet r{n}" for n in rounds] + ["median ÷ Shopfleet"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for metric, unit in table_metrics(compare_rate):
        for system in systems:
            values = [value.get((n, system, metric)) for n in rounds]
            present = [v for v in values if v is not None]
            cells = [f"`{metric}` ({unit})", system] + [number(v) for v in values]
            cells.append(number(statistics.median(present)) if present else "—")
            if system == "shopfleet" or "shopfleet" not in systems:
                cells += [""] * (len(rounds) + 1)
            else:
                ratios = [v / s if v is not None and s else None
                          for v, s in zip(values, (value.get((n, "shopfleet", metric)) for n in rounds))]
                known = [r for r in ratios if r is not None]
                cells += [number(r) for r in ratios] + [f"**{number(statistics.median(known))}**" if known else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interrupted(*_):
    """SIGTERM as Ctrl-C: a plain `kill` lets the running bench tear down too."""
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each system (default 2)")
    parser.add_argument("--seconds", type=int, default=15, help="length of each fixed-rate phase (default 15)")
    parser.add_argument("--orders", type=int, default=600, help="orders in the burst (default 600)")
    parser.add_argument("--shopfleet-rates", type=rates, default=[5, 10, 20, 50, 100], metavar="R,R,...",
                        help="Shopfleet's offered rates, orders/s (default 5,10,20,50,100)")
    parser.add_argument("--peer-rates", type=rates, default=[5, 10, 20], metavar="R,R,...",
                        help="the peers' offered rates, orders/s (default 5,10,20: both stop keeping up above ~20)")
    parser.add_argument("--systems", type=lambda s: [x for x in s.split(",") if x], default=list(SYSTEMS),
                        help="which of shopfleet,temporal,dbos to run (default all three)")
    parser.add_argument("--out", help="rows as JSON lines (default bench/results/peers-DATE.jsonl)")
    args = parser.parse_args()
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system {', '.join(sorted(unknown))}; choose from {','.join(SYSTEMS)}")
    check_setup(args.systems)
    out = args.out or default_out()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    signal.signal(signal.SIGTERM, interrupted)

    rows, failed = [], []
    rounds = list(range(1, args.rounds + 1))
    try:
        with open(out, "a") as sink:
            for n in rounds:
                for system in rotation(n - 1, args.systems):
                    print(f"compare.py: round {n}/{args.rounds}: {system}", file=sys.stderr, flush=True)
                    started = time.monotonic()
                    code, lines = run_once(system, args)
                    run_rows = normalise(system, lines, n, args.shopfleet_rates[0] if system == "shopfleet" else None)
                    took = time.monotonic() - started
                    if code != 0 or not run_rows:
                        why = f"exited with {code}" if code != 0 else "printed no rows"
                        print(f"compare.py: round {n}: {system} {why} after {took:.0f}s", file=sys.stderr, flush=True)
                        failed.append(f"round {n} {system} ({why})")
                    else:
                        print(f"compare.py: round {n}: {system} done in {took:.0f}s", file=sys.stderr, flush=True)
                    # A failed run's rows are kept too (the Shopfleet bench prints nothing then; a peer
                    # whose ledger did not add up prints its rows and exits 1): the table shows them.
                    for row in run_rows:
                        sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    rows += run_rows
    except KeyboardInterrupt:
        print(f"compare.py: interrupted; rows so far are in {out}", file=sys.stderr)
        sys.exit(130)

    common = set(args.shopfleet_rates if "shopfleet" in args.systems else args.peer_rates) & set(args.peer_rates)
    compare_rate = 20 if 20 in common else max(common, default=None)
    print(f"Fixed rates {','.join(map(str, args.shopfleet_rates))}/s (Shopfleet), {','.join(map(str, args.peer_rates))}/s"
          f" (peers), {args.seconds}s each; {args.orders} orders in the burst (saturation); no declined cards. Latency is"
          f" place → order completed. Rows: {os.path.relpath(out)}\n")
    print(markdown(rows, args.systems, rounds, compare_rate))
    if failed:
        print(f"\ncompare.py: failed: {'; '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
