"""The load on a checkout peer: warm-up, fixed offered rates, a burst. Prints one JSON object.

run.py starts it once the engine and its worker are up:

    driver.py temporal|dbos --rates 20,50 --seconds 15 --orders 600 --declined 0.02 --pids 123:peer-worker

Environment: PEER_APP_DATABASE_URL, and PEER_TEMPORAL_ADDRESS (Temporal) or PEER_DBOS_SYSTEM_URL (DBOS).

Latency is from asking the engine to start the order's workflow to holding its result, and, read
from the database afterwards, to the commit of the confirm step (orders.confirmed_at, the point
Shopfleet's bench measures to). Percentiles are over completed orders; throughput and CPU count
every finished order, cancelled ones too.
"""
import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg

import checkout
from cpu import GROUPS, CpuWindow

WARMUP_ORDERS = 20
BURST_STARTERS = 50          # workflow starts in flight at once in the burst
FIXED_DEADLINE = 120         # seconds, after the last order of a fixed rate is started
BURST_DEADLINE = 300
STATS_SETTLE = 1.5           # PostgreSQL backends flush their counters at most once a second
IDLE_SECONDS = 2.0
TERMINAL = ["SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]


class TemporalPeer:
    """Starts Checkout workflows; awaits each result with the SDK's long poll."""

    def __init__(self):
        self.polls = 0
        self.handles = {}

    async def open(self):
        from temporalio.client import Client
        self.client = await Client.connect(os.environ["PEER_TEMPORAL_ADDRESS"])

    async def start(self, order):
        self.handles[order["order_id"]] = await self.client.start_workflow(
            "Checkout", order, id=f"order-{order['order_id']}", task_queue="checkout")

    async def result(self, order_id):
        return await self.handles.pop(order_id).result()

    async def close(self):
        pass


class DbosPeer:
    """Enqueues checkout workflows with DBOSClient; one watcher finds the finished ones.

    DBOSClient's handle.get_result polls the system database once per workflow (every second by
    default); one query for all the orders in flight every 10 ms costs far less at 600 in flight
    and adds at most 10 ms. Its polls are counted so they can be left out of commits per order.
    """

    POLL_SECONDS = 0.01

    def __init__(self):
        self.polls = 0
        self.futures = {}  # workflow id -> its result, set by the watcher

    async def open(self):
        from dbos import DBOSClient
        self.client = DBOSClient(system_database_url=os.environ["PEER_DBOS_SYSTEM_URL"], application_name="shopfleet-peer",
                                 system_database_pool_size=BURST_STARTERS + 2)
        self.watcher = asyncio.create_task(self.watch())

    async def start(self, order):
        workflow_id = f"order-{order['order_id']}"
        self.futures[workflow_id] = asyncio.get_running_loop().create_future()
        await self.client.enqueue_async({"queue_name": "checkout", "workflow_name": "checkout", "workflow_id": workflow_id}, order)

    async def result(self, order_id):
        workflow_id = f"order-{order_id}"
        try:
            return await self.futures[workflow_id]
        finally:
            del self.futures[workflow_id]

    async def watch(self):
        while True:
            await asyncio.sleep(self.POLL_SECONDS)
            pending = [id for id, future in self.futures.items() if not future.done()]
            if not pending:
                continue
            self.polls += 1
            try:
                finished = await self.client.list_workflows_async(workflow_ids=pending, status=TERMINAL, load_input=False)
            except Exception as error:  # the phase's deadline ends the run if this goes on
                print(f"driver: polling DBOS for results: {error}", file=sys.stderr)
                continue
            for status in finished:
                future = self.futures[status.workflow_id]
                if status.status == "SUCCESS":
                    future.set_result(status.output)
                else:
                    future.set_exception(RuntimeError(f"workflow {status.workflow_id}: {status.status} {status.error}"))

    async def close(self):
        self.watcher.cancel()
        self.client.destroy()


class Load:
    def __init__(self, peer, declined, known_pids):
        self.peer = peer
        self.declined = declined
        self.known_pids = known_pids
        self.random = random.Random(7)
        self.finished = {"completed": 0, "cancelled": 0}  # every order, warm-up included

    def order(self):
        number = self.random.randint(1, checkout.PRODUCTS)
        item = checkout.product(number)
        card = checkout.DECLINED_CARD if self.random.random() < self.declined else "pm_card_visa"
        return {"order_id": str(uuid.uuid4()), "email": "bench@example.com", "payment_method": card,
                "lines": [{"sku": item["sku"], "quantity": 1, "price": item["price"]}], "total": item["price"]}

    async def place(self, order, starters=None):
        """{id, status, started (wall clock), seconds (start → result), ended (monotonic)}. In the
        burst the clock starts when a starter takes the order, as Shopfleet's publishers do."""
        async with starters or contextlib.nullcontext():
            started_wall, started = time.time(), time.monotonic()
            await self.peer.start(order)
        result = await self.peer.result(order["order_id"])
        ended = time.monotonic()
        self.finished[result["status"]] += 1
        return {"id": order["order_id"], "status": result["status"], "started": started_wall,
                "seconds": ended - started, "ended": ended}

    async def wait(self, tasks, deadline, what):
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        failed = [t.exception() for t in done if t.exception()]
        if pending or failed:
            for t in pending:
                t.cancel()
            raise SystemExit(f"driver: {what}: {len(done) - len(failed)} of {len(tasks)} orders finished within {deadline}s"
                             + (f"; first failure: {failed[0]}" if failed else ""))
        return [t.result() for t in done]

    async def warm_up(self):
        tasks = []
        for _ in range(WARMUP_ORDERS):
            tasks.append(asyncio.create_task(self.place(self.order())))
            await asyncio.sleep(0.02)
        await self.wait(tasks, 60, "warm-up")

    async def fixed_rate(self, rate, seconds):
        """Orders started on a schedule of absolute times, so a slow start does not lower the rate."""
        loop = asyncio.get_running_loop()
        with CpuWindow(self.known_pids) as cpu:
            start = time.monotonic()
            begin = loop.time()
            tasks = []
            for index in range(rate * seconds):
                await asyncio.sleep(max(0.0, begin + index / rate - loop.time()))
                tasks.append(asyncio.create_task(self.place(self.order())))
            records = await self.wait(tasks, FIXED_DEADLINE, f"fixed rate {rate}/s")
        return start, records, cpu

    async def burst(self, orders):
        starters = asyncio.Semaphore(BURST_STARTERS)
        with CpuWindow(self.known_pids) as cpu:
            start = time.monotonic()
            tasks = [asyncio.create_task(self.place(self.order(), starters)) for _ in range(orders)]
            records = await self.wait(tasks, BURST_DEADLINE, "burst")
        return start, records, cpu


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(len(values) * p) - 1)] if values else 0.0


def phase_rows(suffix, start, records, cpu, confirmed):
    """The rows of one phase. suffix is "@20" for a fixed rate, "_saturation" for the burst."""
    finished = len(records)
    completed = [r for r in records if r["status"] == "completed"]
    result_ms = [r["seconds"] * 1000 for r in completed]
    confirm_ms = [(confirmed[r["id"]] - r["started"]) * 1000 for r in completed if r["id"] in confirmed]
    elapsed = max(r["ended"] for r in records) - start
    fixed = suffix.startswith("@")
    name = lambda metric: metric + suffix
    rows = [
        (name("orders_fixed_rate" if fixed else "orders"), "orders/s", finished / elapsed),
        (name("latency_p50"), "ms", percentile(result_ms, 0.5)),
        (name("latency_p99"), "ms", percentile(result_ms, 0.99)),
        (name("confirm_latency_p50"), "ms", percentile(confirm_ms, 0.5)),
        (name("confirm_latency_p99"), "ms", percentile(confirm_ms, 0.99)),
        (name("cpu_ms_per_order"), "ms", cpu.machine * 1000 / finished),
    ]
    for group in GROUPS:
        metric = f"cpu_ms_per_order.{group}{suffix}" if fixed else f"cpu_ms_per_order{suffix}.{group}"
        rows.append((metric, "ms", cpu.groups.get(group, 0.0) * 1000 / finished))
    return rows


Counters = collections.namedtuple("Counters", "commits written polls at")


def counters(conn, databases, peer):
    """Per database, commits and rows inserted, updated or deleted so far (reading them is itself
    a commit in the app database); the driver's result polls so far; the time."""
    rows = conn.execute("SELECT datname, xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
                        " WHERE datname = ANY(%s)", (databases,)).fetchall()
    return Counters({d: c for d, c, _ in rows}, {d: w for d, _, w in rows}, peer.polls, time.monotonic())


def commit_rows(databases, idle, loaded, orders):
    """PostgreSQL commits per order while loaded, per database and in all, less the driver's own
    (its readings of the counters, DBOS result polls). The idle engine's commits per second
    (DBOS's queue polling) go on under load too: they are in the per-order figure and taken out
    in the _excluding_idle one. xact_commit counts read-only transactions as well, so rows
    written per order tell how much of it writes. idle and loaded are (start, end) Counters."""
    def commits(window):
        start, end = window
        return {d: end.commits[d] - start.commits[d] - (1 if d == databases[0] else end.polls - start.polls)
                for d in databases}
    label = lambda d: "app" if d == databases[0] else "system"
    idle_rate = sum(commits(idle).values()) / (idle[1].at - idle[0].at)
    per_database = commits(loaded)
    total = sum(per_database.values())
    rows = [("pg_commits_per_order", "commits", total / orders),
            ("pg_commits_per_order_excluding_idle", "commits", (total - idle_rate * (loaded[1].at - loaded[0].at)) / orders)]
    rows += [(f"pg_commits_per_order.{label(d)}", "commits", per_database[d] / orders) for d in databases]
    rows += [(f"pg_rows_written_per_order.{label(d)}", "rows", (loaded[1].written[d] - loaded[0].written[d]) / orders)
             for d in databases]
    rows.append(("pg_commits_idle_per_s", "commits/s", idle_rate))
    rows.append(("driver_result_polls", "queries", loaded[1].polls - loaded[0].polls))
    return rows


async def run(args):
    # DBOSClient's async calls run in the default executor (6 threads on 2 cores): give the
    # burst's starters one each.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=BURST_STARTERS + 4))
    peer = TemporalPeer() if args.system == "temporal" else DbosPeer()
    known = {os.getpid(): "driver"}
    for item in filter(None, args.pids.split(",")):
        pid, group = item.split(":")
        known[int(pid)] = group
    databases = args.databases.split(",")
    stats = psycopg.connect(os.environ["PEER_APP_DATABASE_URL"], autocommit=True)
    await peer.open()
    load = Load(peer, args.declined, known)
    try:
        await load.warm_up()
        # The engine with nothing to do (queue polling, timers), then under load.
        await asyncio.sleep(STATS_SETTLE)
        idle_start = counters(stats, databases, peer)
        with CpuWindow(known) as idle_cpu:
            await asyncio.sleep(IDLE_SECONDS)
        loaded_start = counters(stats, databases, peer)
        phases = []
        for rate in args.rates:
            phases.append((f"@{rate}",) + await load.fixed_rate(rate, args.seconds))
        phases.append(("_saturation",) + await load.burst(args.orders))
        await asyncio.sleep(STATS_SETTLE)
        loaded_end = counters(stats, databases, peer)
    finally:
        await peer.close()

    ids = [r["id"] for _, _, records, _ in phases for r in records]
    confirmed = dict(stats.execute("SELECT id, extract(epoch FROM confirmed_at)::float8 FROM orders.orders"
                                   " WHERE id = ANY(%s) AND confirmed_at IS NOT NULL", (ids,)).fetchall())
    stats.close()
    rows = []
    for suffix, start, records, cpu in phases:
        rows += phase_rows(suffix, start, records, cpu, confirmed)
    measured = [r for _, _, records, _ in phases for r in records]
    rows.append(("completed", "orders", sum(r["status"] == "completed" for r in measured)))
    rows.append(("cancelled", "orders", sum(r["status"] == "cancelled" for r in measured)))
    rows += commit_rows(databases, (idle_start, loaded_start), (loaded_start, loaded_end), len(measured))
    # What the engine burns waiting for work (by group: the machine also runs other people's work).
    rows += [(f"idle_cpu_ms_per_s.{group}", "ms/s", idle_cpu.groups.get(group, 0.0) * 1000 / IDLE_SECONDS)
             for group in GROUPS]
    print(json.dumps({"rows": rows, "finished": load.finished}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=["temporal", "dbos"])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[20])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--declined", type=float, default=0.02)
    parser.add_argument("--pids", default="", help="pid:group,... of the engine's processes")
    parser.add_argument("--databases", required=True, help="app database[,system database], whose commits are counted")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
