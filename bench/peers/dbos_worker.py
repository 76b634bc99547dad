"""The DBOS peer's worker: the checkout as a DBOS workflow whose steps are datasource transactions.

In DBOS 3 a datasource transaction (what @DBOS.transaction was in DBOS 1 and 2) commits the step's
checkpoint in the same PostgreSQL transaction as the step's own writes, so a step never runs twice
to completion. The workflows come from a queue that the driver, a separate process, fills through
DBOSClient.

Environment: PEER_APP_DATABASE_URL (the checkout's database), PEER_DBOS_SYSTEM_URL (DBOS's own),
PEER_DBOS_QUEUE_POLL (seconds between polls of the queue, default 0.05).
Prints "ready" on stdout once it listens to its queue; stops on SIGTERM or SIGINT.
"""
import os
import signal
import threading

from dbos import DBOS, SQLAlchemyDatasource

import checkout

APP_NAME = "shopfleet-peer"
QUEUE = "checkout"
# As the Temporal peer: up to 100 orders in progress in this worker, 20 connections for the steps.
WORKFLOWS = 100
CONNECTIONS = 20
# DBOS finds queued work by polling its system database (by default once a second). Measured
# idle here: every 10 ms costs ~230 commits/s and a third of a core in this worker, every 50 ms
# ~85 commits/s and a tenth of a core, every second ~18 commits/s. 50 ms (an order waits 25 ms
# on average before it starts) unless run.py --dbos-queue-poll says otherwise.
QUEUE_POLL_SECONDS = float(os.environ.get("PEER_DBOS_QUEUE_POLL", "0.05"))

DBOS(config={
    "name": APP_NAME,
    "system_database_url": os.environ["PEER_DBOS_SYSTEM_URL"],
    "sys_db_pool_size": CONNECTIONS,
    "log_level": "WARNING",
})
app = SQLAlchemyDatasource.create(os.environ["PEER_APP_DATABASE_URL"],
                                  engine_kwargs={"pool_size": CONNECTIONS, "max_overflow": 0})


def transaction(step):
    """A checkout step as a datasource transaction on its session's psycopg connection.

    READ COMMITTED, not DBOS's default SERIALIZABLE: the steps are written for it (the stock
    update checks availability in its WHERE), and serializable would retry on every hot SKU.
    """
    @app.transaction(name=step.__name__, isolation_level="READ COMMITTED")
    def run(*args):
        connection = app.sql_session().connection().connection.driver_connection
        with connection.cursor() as cur:
            return step(cur, *args)
    return run


create_order = transaction(checkout.create_order)
reserve_stock = transaction(checkout.reserve_stock)
authorize_payment = transaction(checkout.authorize_payment)
release_reservation = transaction(checkout.release_reservation)
cancel_order = transaction(checkout.cancel_order)
commit_reservation = transaction(checkout.commit_reservation)
confirm_order = transaction(checkout.confirm_order)
capture_payment = transaction(checkout.capture_payment)
complete_order = transaction(checkout.complete_order)
queue_confirmation_email = transaction(checkout.queue_confirmation_email)


@DBOS.workflow(name="checkout")
def checkout_workflow(order: dict) -> dict:
    order_id = order["order_id"]
    create_order(order)
    if not reserve_stock(order):
        cancel_order(order_id, "out of stock")
        return {"order_id": order_id, "status": "cancelled", "reason": "out of stock"}
    if authorize_payment(order) == "declined":
        release_reservation(order_id)
        cancel_order(order_id, "payment declined")
        return {"order_id": order_id, "status": "cancelled", "reason": "payment declined"}
    commit_reservation(order_id)
    confirm_order(order_id)
    capture_payment(order_id)
    complete_order(order_id)
    queue_confirmation_email(order)
    return {"order_id": order_id, "status": "completed"}


def main():
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=WORKFLOWS, polling_interval_sec=QUEUE_POLL_SECONDS)
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=5)


if __name__ == "__main__":
    main()
