"""The Temporal peer's worker: the Checkout workflow and its steps as activities.

Environment: PEER_APP_DATABASE_URL (the checkout's database), PEER_TEMPORAL_ADDRESS (host:port).
Prints "ready" on stdout once it polls its task queue; stops on SIGTERM or SIGINT.
"""
import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

import checkout
from temporal_workflow import Checkout

TASK_QUEUE = "checkout"
# Activities run in threads (the steps are plain psycopg, shared with the DBOS peer). 100 at once
# keeps a burst's orders moving; 20 connections are enough for one-statement transactions on
# 2 cores and leave the server's max_connections to the rest of the machine.
ACTIVITY_THREADS = 100
CONNECTIONS = 20

pool = None


def activity_of(step):
    """A checkout step as an activity: one transaction on a pooled connection (committed when the
    block ends, rolled back if the step raises)."""
    @activity.defn(name=step.__name__)
    def run(*args):
        with pool.connection() as conn, conn.cursor() as cur:
            return step(cur, *args)
    return run


ACTIVITIES = [activity_of(step) for step in (
    checkout.create_order, checkout.reserve_stock, checkout.authorize_payment, checkout.release_reservation,
    checkout.cancel_order, checkout.commit_reservation, checkout.confirm_order, checkout.capture_payment,
    checkout.complete_order, checkout.queue_confirmation_email)]


async def main():
    global pool
    pool = ConnectionPool(os.environ["PEER_APP_DATABASE_URL"], min_size=CONNECTIONS, max_size=CONNECTIONS, open=True)
    pool.wait(timeout=30)
    client = await Client.connect(os.environ["PEER_TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as threads:
        worker = Worker(client, task_queue=TASK_QUEUE, workflows=[Checkout], activities=ACTIVITIES,
                        activity_executor=threads, max_concurrent_activities=ACTIVITY_THREADS)
        async with worker:
            print("ready", flush=True)
            await stop.wait()
    pool.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
