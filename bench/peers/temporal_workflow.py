"""The checkout as a Temporal workflow: each step an activity (one PostgreSQL transaction).

Kept apart from the activities: Temporal re-imports a workflow's module in its sandbox for every
run, so this file imports nothing but the SDK.
"""
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

# A step is retried until it succeeds: every step is idempotent (checkout.py), and a failure
# here is a database hiccup, not a business outcome (those are return values).
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_interval=timedelta(seconds=2))


def step(name, *args):
    return workflow.execute_activity(name, args=list(args), start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY)


@workflow.defn(name="Checkout")
class Checkout:
    @workflow.run
    async def run(self, order: dict) -> dict:
        order_id = order["order_id"]
        await step("create_order", order)
        if not await step("reserve_stock", order):
            await step("cancel_order", order_id, "out of stock")
            return {"order_id": order_id, "status": "cancelled", "reason": "out of stock"}
        if await step("authorize_payment", order) == "declined":
            await step("release_reservation", order_id)
            await step("cancel_order", order_id, "payment declined")
            return {"order_id": order_id, "status": "cancelled", "reason": "payment declined"}
        await step("commit_reservation", order_id)
        await step("confirm_order", order_id)
        await step("capture_payment", order_id)
        await step("complete_order", order_id)
        await step("queue_confirmation_email", order)
        return {"order_id": order_id, "status": "completed"}
