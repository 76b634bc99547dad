"""The checkout both peers run: its schemas, its steps and the ledger they must leave.

Each step is one PostgreSQL transaction in one schema, given a psycopg cursor whose transaction
the engine owns (Temporal: a pooled connection per activity; DBOS: the datasource transaction
that also commits the step's checkpoint). Every step is safe to run again for the same order:
an engine may re-execute a step whose outcome it did not record.
"""
from psycopg.types.json import Jsonb

PRODUCTS = 100
STOCK = 1_000_000
DECLINED_CARD = "pm_card_declined"

SCHEMA = """
CREATE SCHEMA orders;
CREATE TABLE orders.orders (
    id text PRIMARY KEY,
    customer_email text NOT NULL,
    payment_method text NOT NULL,
    lines jsonb NOT NULL,
    total bigint NOT NULL,
    status text NOT NULL,
    reason text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    confirmed_at timestamptz,
    completed_at timestamptz,
    cancelled_at timestamptz
);
CREATE SCHEMA inventory;
CREATE TABLE inventory.stock (sku text PRIMARY KEY, available integer NOT NULL);
CREATE TABLE inventory.reservations (
    order_id text PRIMARY KEY,
    sku text NOT NULL,
    quantity integer NOT NULL,
    status text NOT NULL,  -- reserved, committed, released, rejected (out of stock)
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE SCHEMA payments;
CREATE TABLE payments.payments (
    order_id text PRIMARY KEY,
    method text NOT NULL,
    amount bigint NOT NULL,
    status text NOT NULL,  -- authorized, declined, captured
    captured_at timestamptz
);
CREATE SCHEMA notifications;
CREATE TABLE notifications.outbox (
    id bigserial PRIMARY KEY,
    order_id text NOT NULL,
    kind text NOT NULL,
    recipient text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    UNIQUE (order_id, kind)
);
"""


def product(number):
    """The n-th of the seeded products (1-based): its SKU and price in cents, as Shopfleet's bench seeds them."""
    return {"sku": f"BENCH-{number}", "price": 100 + number}


def create_schema(conn):
    conn.execute(SCHEMA)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO inventory.stock (sku, available) VALUES (%s, %s)",
                        [(product(n)["sku"], STOCK) for n in range(1, PRODUCTS + 1)])


# ---------------------------------------------------------------- the steps


def create_order(cur, order):
    cur.execute(
        "INSERT INTO orders.orders (id, customer_email, payment_method, lines, total, status)"
        " VALUES (%s, %s, %s, %s, %s, 'placed') ON CONFLICT (id) DO NOTHING",
        (order["order_id"], order["email"], order["payment_method"], Jsonb(order["lines"]), order["total"]))


def reserve_stock(cur, order):
    """True if the stock is reserved, False if it is out of stock (then nothing is held).

    The reservation row is written first: its primary key makes a repeated or concurrent run of
    this step wait for, then see, the first one's outcome instead of taking the stock twice.
    """
    line = order["lines"][0]
    cur.execute(
        "INSERT INTO inventory.reservations (order_id, sku, quantity, status) VALUES (%s, %s, %s, 'reserved')"
        " ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        (order["order_id"], line["sku"], line["quantity"]))
    if cur.fetchone() is None:
        cur.execute("SELECT status FROM inventory.reservations WHERE order_id = %s", (order["order_id"],))
        return cur.fetchone()[0] != "rejected"
    cur.execute("UPDATE inventory.stock SET available = available - %s WHERE sku = %s AND available >= %s",
                (line["quantity"], line["sku"], line["quantity"]))
    if cur.rowcount == 0:
        cur.execute("UPDATE inventory.reservations SET status = 'rejected' WHERE order_id = %s", (order["order_id"],))
        return False
    return True


def authorize_payment(cur, order):
    """'authorized' or 'declined' (the sandbox card pm_card_declined is always declined)."""
    status = "declined" if order["payment_method"] == DECLINED_CARD else "authorized"
    cur.execute("INSERT INTO payments.payments (order_id, method, amount, status) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (order_id) DO NOTHING",
                (order["order_id"], order["payment_method"], order["total"], status))
    cur.execute("SELECT status FROM payments.payments WHERE order_id = %s", (order["order_id"],))
    return "declined" if cur.fetchone()[0] == "declined" else "authorized"


def release_reservation(cur, order_id):
    """Compensation: put reserved stock back (only once: the status moves away from 'reserved')."""
    cur.execute("UPDATE inventory.reservations SET status = 'released', updated_at = clock_timestamp()"
                " WHERE order_id = %s AND status = 'reserved' RETURNING sku, quantity", (order_id,))
    row = cur.fetchone()
    if row:
        cur.execute("UPDATE inventory.stock SET available = available + %s WHERE sku = %s", (row[1], row[0]))


def cancel_order(cur, order_id, reason):
    cur.execute("UPDATE orders.orders SET status = 'cancelled', reason = %s, cancelled_at = clock_timestamp()"
                " WHERE id = %s AND status = 'placed'", (reason, order_id))


def commit_reservation(cur, order_id):
    cur.execute("UPDATE inventory.reservations SET status = 'committed', updated_at = clock_timestamp()"
                " WHERE order_id = %s AND status = 'reserved'", (order_id,))


def confirm_order(cur, order_id):
    cur.execute("UPDATE orders.orders SET status = 'confirmed', confirmed_at = clock_timestamp()"
                " WHERE id = %s AND status = 'placed'", (order_id,))


def capture_payment(cur, order_id):
    cur.execute("UPDATE payments.payments SET status = 'captured', captured_at = clock_timestamp()"
                " WHERE order_id = %s AND status = 'authorized'", (order_id,))


def complete_order(cur, order_id):
    cur.execute("UPDATE orders.orders SET status = 'completed', completed_at = clock_timestamp()"
                " WHERE id = %s AND status = 'confirmed'", (order_id,))


def queue_confirmation_email(cur, order):
    """The email that would be sent, as an outbox row (one per order: the unique key)."""
    cur.execute(
        "INSERT INTO notifications.outbox (order_id, kind, recipient, subject, body)"
        " VALUES (%s, 'order-completed', %s, %s, %s) ON CONFLICT (order_id, kind) DO NOTHING",
        (order["order_id"], order["email"], f"Your order {order['order_id']}",
         f"Thank you. {order['lines'][0]['sku']} x {order['lines'][0]['quantity']}, {order['total']} cents."))


# ---------------------------------------------------------------- the ledger


def ledger_violations(conn):
    """What the finished checkout must have left, as a list of broken rules (empty if none)."""
    one = lambda sql: conn.execute(sql).fetchone()[0]
    completed = one("SELECT count(*) FROM orders.orders WHERE status = 'completed'")
    cancelled = one("SELECT count(*) FROM orders.orders WHERE status = 'cancelled'")
    unfinished = one("SELECT count(*) FROM orders.orders WHERE status NOT IN ('completed', 'cancelled')")
    captured = one("SELECT count(*) FROM payments.payments WHERE status = 'captured'")
    captured_of_completed = one("SELECT count(*) FROM payments.payments p JOIN orders.orders o ON o.id = p.order_id"
                                " WHERE p.status = 'captured' AND o.status = 'completed'")
    committed = one("SELECT count(*) FROM inventory.reservations WHERE status = 'committed'")
    held = one("SELECT count(*) FROM inventory.reservations WHERE status = 'reserved'")
    taken = one(f"SELECT coalesce(sum({STOCK} - available), 0) FROM inventory.stock")
    notified = one("SELECT count(*) FROM notifications.outbox")
    notified_orders = one("SELECT count(DISTINCT order_id) FROM notifications.outbox o"
                          " WHERE EXISTS (SELECT 1 FROM orders.orders WHERE id = o.order_id AND status = 'completed')")
    rules = [
        (unfinished == 0, f"{unfinished} orders neither completed nor cancelled"),
        (captured == completed and captured_of_completed == completed,
         f"{completed} completed orders but {captured} captured payments ({captured_of_completed} of completed orders)"),
        (committed == completed, f"{completed} completed orders but {committed} committed reservations"),
        (held == 0, f"{held} reservations still held"),
        (taken == completed, f"stock decreased by {taken}, but {completed} orders (quantity 1) completed"),
        (notified == completed and notified_orders == completed,
         f"{notified} notification rows for {completed} completed orders"),
    ]
    return [message for ok, message in rules if not ok], {"completed": completed, "cancelled": cancelled}
