import AMQPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import PaymentsSandbox
import PostgresClient
import Sagas
import ShopfleetTesting
import Testing

/// The order saga end to end: separate worker processes, real RabbitMQ and PostgreSQL, and the
/// payments sandbox over HTTP.
@Suite("Checkout across the fleet", .serialized)
struct CheckoutFlowTests {
    static let terminal: Set<String> = ["completed", "cancelled", "compensation_failed"]

    /// Every gateway request held until the test sets other faults.
    static var holding: PaymentsSandbox.Faults {
        var faults = PaymentsSandbox.Faults()
        faults.hold = true
        return faults
    }

    /// Until the gateway holds a request (the authorization is certainly inside it).
    static func waitUntilHeld(_ fleet: CheckoutFleet) async throws {
        try await waitUntil(deadline: .seconds(20)) { (try? await fleet.sandboxStats().held) ?? 0 >= 1 }
    }

    /// An order for `quantity` of a new product (`stock` in stock, 12.50 EUR) whose authorization
    /// the gateway holds (`holding`) until the test changes its faults.
    static func placeHeldOrder(_ fleet: CheckoutFleet, _ sku: String, stock: Int, quantity: Int = 1) async throws -> (product: Product, id: String) {
        let product = CheckoutFleet.product(sku, price: 1250)
        try await fleet.seed([.init(product: product, stock: stock)])
        try await fleet.setFaults(holding)
        let id = try await fleet.placeOrder([(product, quantity)])
        try await waitUntilHeld(fleet)
        return (product, id)
    }

    @Test func anOrderIsReservedAuthorizedConfirmedCapturedAndCompleted() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-1", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let id = try await fleet.placeOrder([(mug, 2)])
            let order = try await fleet.waitForSaga(id, in: Self.terminal)
            #expect(order == .init(status: "completed", reason: nil, sagaState: "completed"))

            #expect(try await fleet.stock("MUG-1") == (onHand: 3, reserved: 0))
            let stats = try await fleet.sandboxStats()
            #expect(stats.intentsPerOrder[id] == 1)
            #expect(stats.intents["succeeded"] == 1)
            #expect(try await fleet.count("SELECT count(*) FROM payments.payments WHERE order_id = $1 AND status = 'captured' AND amount = 2500", [id]) == 1)

            let steps = try await fleet.steps(id)
            let sent = steps.filter { $0.kind == .sent }.map(\.name)
            #expect(sent == ["inventory.ReserveStock.v1", "payments.AuthorizePayment.v1", "inventory.CommitReservation.v1", "payments.CapturePayment.v1"])
            #expect(steps.filter { $0.kind == .published }.map(\.name) == ["orders.OrderPlaced.v1", "orders.OrderConfirmed.v1", "orders.OrderCompleted.v1"])
            #expect(steps.allSatisfy { $0.kind != .ignored })

            // One email, the confirmation, to the customer.
            try await waitUntil(deadline: .seconds(20)) { (try? fleet.mails().count) == 1 }
            let mail = try #require(try fleet.mails().first)
            #expect(mail.headers["to"] == "ada@example.com")
            #expect(mail.headers["subject"] == "Your Shopfleet order is confirmed")
            #expect(mail.headers["message-id"] == "<\(id).orders.OrderConfirmed.v1@shopfleet>")
            #expect(mail.body.contains("2 × Product MUG-1"))
            #expect(mail.body.contains("Total: 25.00 EUR"))
            // The row is marked sent in the transaction that follows the SMTP exchange, so it may
            // commit a moment after the mail arrived.
            try await waitUntil(deadline: .seconds(20)) {
                try await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND status = 'sent'", [id]) == 1
            }
            // Delivered while its event was handled, at the first attempt: no message of its own.
            #expect(try await fleet.count("SELECT attempts FROM notifications.notifications WHERE order_id = $1", [id]) == 1)
            #expect(try await fleet.metric("notifications", "shopfleet_messages_consumed_total", containing: DeliverNotification.type) == 0)
        }
    }

    @Test func outOfStockCancelsAndReservesNothing() async throws {
        try await CheckoutFleet.with { fleet in
            let lamp = CheckoutFleet.product("LAMP-1", price: 4000)
            let mug = CheckoutFleet.product("MUG-2", price: 1250)
            try await fleet.seed([.init(product: lamp, stock: 1), .init(product: mug, stock: 10)])
            let id = try await fleet.placeOrder([(mug, 3), (lamp, 2)])
            let order = try await fleet.waitForSaga(id, in: Self.terminal)
            #expect(order.status == "cancelled")
            #expect(order.reason?.contains("out of stock") == true)
            #expect(order.reason?.contains("LAMP-1") == true)
            // All or nothing: not even the mugs that were there.
            #expect(try await fleet.stock("MUG-2") == (onHand: 10, reserved: 0))
            #expect(try await fleet.stock("LAMP-1") == (onHand: 1, reserved: 0))
            #expect(try await fleet.sandboxStats().intentsPerOrder[id] == nil)
        }
    }

    @Test func aDeclinedCardReleasesTheStockAndCancels() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-3", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 4)])
            let id = try await fleet.placeOrder([(mug, 2)], paymentMethod: "pm_card_chargeDeclinedInsufficientFunds")
            let order = try await fleet.waitForSaga(id, in: Self.terminal)
            #expect(order.status == "cancelled")
            #expect(order.reason == "payment declined: Your card has insufficient funds.")
            #expect(try await fleet.stock("MUG-3") == (onHand: 4, reserved: 0))
            #expect(try await fleet.count("SELECT count(*) FROM payments.payments WHERE order_id = $1 AND decline_code = 'insufficient_funds'", [id]) == 1)
            #expect(try await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = $1 AND status = 'released'", [id]) == 1)
            try await waitUntil(deadline: .seconds(20)) { (try? fleet.mails().count) == 1 }
            let mail = try #require(try fleet.mails().first)
            #expect(mail.headers["subject"] == "Your Shopfleet order was cancelled")
            #expect(mail.body.contains("Why: payment declined: Your card has insufficient funds."))
        }
    }

    @Test func aHangingGatewayTimesTheSagaOutAndTheLateAuthorizationIsVoided() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT": "1500ms"]) { fleet in
            let mug = CheckoutFleet.product("MUG-4", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 3)])
            try await fleet.setFaults(Self.holding)
            let id = try await fleet.placeOrder([(mug, 1)])
            // The payment timeout fires while the gateway holds the request (until released).
            try await fleet.waitForSaga(id, in: ["voiding_payment", "releasing_stock", "cancelled"], deadline: .seconds(20))
            #expect(try await fleet.sandboxStats().held == 1)
            try await fleet.setFaults(PaymentsSandbox.Faults())
            let order = try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(60))
            #expect(order.status == "cancelled")
            #expect(order.reason?.contains("not authorized within") == true)
            #expect(try await fleet.stock("MUG-4") == (onHand: 3, reserved: 0))
            // The gateway did authorize, late, once; and that authorization was voided.
            let stats = try await fleet.sandboxStats()
            #expect(stats.intentsPerOrder[id] == 1)
            #expect(stats.intents["requires_capture", default: 0] == 0)
            #expect(stats.intents["canceled"] == 1)
            #expect(try await fleet.steps(id).contains { $0.kind == .timeout && $0.name == "timeout authorizing_payment" })
        }
    }

    @Test func aCustomerCancelBeforeCaptureVoidsReleasesAndCancels() async throws {
        try await CheckoutFleet.with { fleet in
            // The authorization is inside the gateway, and stays there until the cancel is handled.
            let id = try await Self.placeHeldOrder(fleet, "MUG-5", stock: 2, quantity: 2).id
            try await fleet.send(CancelOrder(orderID: id, customerID: "cus-test", reason: "changed my mind"))
            try await fleet.waitForSaga(id, in: ["voiding_payment", "releasing_stock", "cancelled"], deadline: .seconds(20))
            try await fleet.setFaults(PaymentsSandbox.Faults())
            let order = try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(40))
            #expect(order.status == "cancelled")
            #expect(order.reason == "cancelled by the customer: changed my mind")
            #expect(try await fleet.stock("MUG-5") == (onHand: 2, reserved: 0))
            #expect(try await fleet.sandboxStats().intents["requires_capture", default: 0] == 0)
        }
    }

    @Test func twentyConcurrentOrdersForFiveUnitsSellExactlyFive() async throws {
        try await CheckoutFleet.with { fleet in
            let last = CheckoutFleet.product("LAST-1", price: 999)
            try await fleet.seed([.init(product: last, stock: 5)])
            var ids: [String] = []
            for _ in 0..<20 { ids.append(try await fleet.placeOrder([(last, 1)])) }
            var outcomes: [String: Int] = [:]
            for id in ids { outcomes[try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(60)).status, default: 0] += 1 }
            #expect(outcomes == ["completed": 5, "cancelled": 15])
            #expect(try await fleet.stock("LAST-1") == (onHand: 0, reserved: 0))
            #expect(try await fleet.sandboxStats().intents["succeeded"] == 5)
        }
    }

    /// Group commit in inventory: batches whose messages touch the same stock rows in opposite
    /// orders (consumer one gets A, B, A, …, consumer two B, A, B, …), all at once. Each batch
    /// takes all of its stock rows in SKU order before its first handler (`beforeBatch`), so the
    /// batches queue behind each other instead of deadlocking: none gives up on a lock and falls
    /// back to one message at a time, for reservations or for the commits and releases that find
    /// their rows through the reservation's lines, and the stock adds up.
    @Test func inventoryBatchesTouchingStockInOppositeOrdersWaitInsteadOfFallingBack() async throws {
        try await CheckoutFleet.with { fleet in
            let (a, b) = ("OPPOSITE-A", "OPPOSITE-B")
            try await fleet.seed([a, b].map { .init(product: CheckoutFleet.product($0, price: 100), stock: 1000) })
            let fallbacks = try await fleet.metric("inventory", "shopfleet_batch_fallbacks_total")
            let batches = try await fleet.metric("inventory", "shopfleet_batches_total")
            // The broker hands the n-th message to about consumer n % 4 (it takes them in turn).
            let ids = (0..<48).map { "opposite-\($0)" }
            func sku(_ n: Int) -> String { (n % 4 + n / 4) % 2 == 0 ? a : b }

            try await fleet.whileFrozen("inventory", queue: ReserveStock.queue) {
                for (n, id) in ids.enumerated() {
                    try await fleet.send(ReserveStock(reservationID: id, lines: [StockLine(sku: sku(n), quantity: 1)], ttlSeconds: 600))
                }
            }
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = ANY($1) AND status = 'reserved'", [ids])) == 48
            }
            #expect(try await fleet.stock(a) == (onHand: 1000, reserved: 24))
            #expect(try await fleet.stock(b) == (onHand: 1000, reserved: 24))

            // Even ones committed, odd ones released: each message names only its reservation.
            try await fleet.whileFrozen("inventory", queue: ReserveStock.queue) {
                for (n, id) in ids.enumerated() {
                    if n % 2 == 0 {
                        try await fleet.send(CommitReservation(reservationID: id))
                    } else {
                        try await fleet.send(ReleaseReservation(reservationID: id, reason: "test"))
                    }
                }
            }
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = ANY($1) AND status IN ('committed', 'released')", [ids])) == 48
            }
            // Even n: sku(n) is A for n % 8 in {0, 2} and B for {4, 6}, so each SKU had 12 committed.
            #expect(try await fleet.stock(a) == (onHand: 988, reserved: 0))
            #expect(try await fleet.stock(b) == (onHand: 988, reserved: 0))
            #expect(try await fleet.metric("inventory", "shopfleet_batches_total") > batches)
            #expect(try await fleet.metric("inventory", "shopfleet_batch_fallbacks_total") == fallbacks)
        }
    }

    /// Group commit in orders: a batch locks and reads its sagas' rows up front (`beforeBatch`,
    /// `SagaEngine.lockAll`), in id order and in one round trip, and each input takes its saga's
    /// row from there. Twelve sagas wait for payments (frozen), then orders is frozen too; their
    /// authorizations, and a decline for the first order behind its authorization, then reach
    /// orders' one consumer at once. The sagas all complete; the decline, a second input for a
    /// saga in the same batch or a later one, sees the state the authorization left (and is
    /// ignored) rather than the row as read ahead (where it would cancel the order).
    @Test func ordersBatchesReadTheirSagasAheadAndASecondInputSeesTheFirst() async throws {
        // One consumer per queue: the decline is handled after the authorization (with four, by
        // whichever consumer the broker gave it, perhaps first). No step sent again meanwhile: an
        // extra authorization would not fit in orders' prefetch of 16 with the others.
        try await CheckoutFleet.with(environment: ["SHOPFLEET_WORKER_CONCURRENCY": "1", "SHOPFLEET_CHECKOUT_RESEND_AFTER": "10m",
                                                   "SHOPFLEET_CHECKOUT_RESEND_LIMIT": "10m"]) { fleet in
            let mug = CheckoutFleet.product("AHEAD-1", price: 900)
            try await fleet.seed([.init(product: mug, stock: 100)])
            let readAhead = try await fleet.metric("orders", "shopfleet_saga_rows_read_ahead_total")
            let fallbacks = try await fleet.metric("orders", "shopfleet_batch_fallbacks_total")
            var ids: [String] = []
            try await fleet.whileFrozen("payments", queue: AuthorizePayment.queue) {
                for _ in 0..<12 { ids.append(try await fleet.placeOrder([(mug, 1)])) }
                try await waitUntil(deadline: .seconds(30)) {
                    (try? await fleet.count("SELECT count(*) FROM orders.sagas WHERE id = ANY($1) AND state = 'authorizing_payment'",
                                            [ids])) == 12
                }
                // Every AuthorizePayment published (the outbox row goes once the broker confirmed
                // it), then orders stops before payments goes on.
                try await waitUntil(deadline: .seconds(30)) { (try? await fleet.count("SELECT count(*) FROM orders.outbox")) == 0 }
                fleet.freeze("orders")
            }
            try await fleet.whileFrozen("orders", queue: "orders.saga-events") {
                // Payments answered all twelve, and the broker has every answer (the outbox is empty).
                try await waitUntil(deadline: .seconds(30)) {
                    let authorized = try? await fleet.count(
                        "SELECT count(*) FROM payments.payments WHERE order_id = ANY($1) AND status = 'authorized'", [ids])
                    let unpublished = try? await fleet.count("SELECT count(*) FROM payments.outbox")
                    return authorized == 12 && unpublished == 0
                }
                let decline = try Envelope(PaymentDeclined(orderID: ids[0], code: "card_declined", declineCode: "test",
                                                           message: "declined after it was authorized"), sagaID: ids[0])
                try await fleet.channel.publish(decline.body, exchange: PaymentDeclined.exchange, routingKey: PaymentDeclined.type,
                                                properties: decline.properties)
            }
            for id in ids {
                #expect(try await fleet.waitForSaga(id, in: Self.terminal).status == "completed")
            }
            let first = try await fleet.steps(ids[0])
            #expect(first.filter { $0.kind == .received }.map(\.name)
                    == ["stock-reserved", "payment-authorized", "reservation-committed", "payment-captured"])
            #expect(first.contains { $0.kind == .ignored && $0.name == "payment-declined" })
            #expect(try await fleet.stock(mug.sku) == (onHand: 88, reserved: 0))
            // Most authorizations came in batches (the first may come alone), and no batch fell back.
            #expect(try await fleet.metric("orders", "shopfleet_saga_rows_read_ahead_total") >= readAhead + 6)
            #expect(try await fleet.metric("orders", "shopfleet_batch_fallbacks_total") == fallbacks)
        }
    }

    @Test func everyMessageDeliveredTwiceStillReservesAndChargesOnce() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHAOS_DUPLICATE_PUBLISHES": "1"]) { fleet in
            let mug = CheckoutFleet.product("MUG-6", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let id = try await fleet.placeOrder([(mug, 2)], times: 2)
            let order = try await fleet.waitForSaga(id, in: Self.terminal)
            #expect(order.status == "completed")
            #expect(try await fleet.stock("MUG-6") == (onHand: 3, reserved: 0))
            let stats = try await fleet.sandboxStats()
            #expect(stats.intentsPerOrder[id] == 1)
            #expect(stats.intents["succeeded"] == 1)
            #expect(try await fleet.count("SELECT count(*) FROM payments.gateway_calls WHERE order_id = $1", [id]) == 2)  // authorize, capture
            // The saga saw each input once: the copies stopped at the orders inbox.
            let received = try await fleet.steps(id).filter { $0.kind == .received }.map(\.name)
            #expect(received == ["stock-reserved", "payment-authorized", "reservation-committed", "payment-captured"])
            // One email, though its event arrived twice: the second copy stopped at the inbox.
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("notifications", "shopfleet_messages_duplicate_total",
                                         containing: OrderConfirmed.type)) == 1
            }
            #expect(try await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND status = 'sent'", [id]) == 1)
            #expect(try fleet.mails().count == 1)
        }
    }

    @Test func aWorkerKilledMidSagaIsRestartedAndTheSagaCompletes() async throws {
        try await CheckoutFleet.with { fleet in
            // Payments is inside the gateway call, its transaction open, the delivery unacked.
            let id = try await Self.placeHeldOrder(fleet, "MUG-7", stock: 5).id
            try await fleet.kill("payments")
            // The gateway goes on with the request the dead worker sent (as a real one would).
            try await fleet.setFaults(PaymentsSandbox.Faults())
            try await fleet.waitReady("payments")
            let order = try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(60))
            #expect(order.status == "completed")
            // The restarted worker asked again under the same key: the first answer, one intent.
            let stats = try await fleet.sandboxStats()
            #expect(stats.intentsPerOrder[id] == 1)
            #expect(stats.idempotentReplays >= 1)
            #expect(try await fleet.stock("MUG-7") == (onHand: 4, reserved: 0))
        }
    }

    /// Inventory, orders and notifications each killed inside a handler of this order's saga: the
    /// test holds a lock the handler needs, waits until the worker's statement waits for it,
    /// kills the worker and lets go. Each restarted worker is given the message again and the
    /// order completes with one reservation, one charge and one email.
    @Test func eachCheckoutWorkerKilledInItsHandlerIsRestartedAndTheOrderCompletesOnce() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-KILLS", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            // Inventory: reserving waits for the stock row.
            let stock = try await fleet.holdLocks(["SELECT 1 FROM inventory.stock WHERE sku = 'MUG-KILLS' FOR UPDATE"])
            let id = try await fleet.placeOrder([(mug, 2)])
            try await fleet.waitUntilBlocked("inventory")
            try await fleet.kill("inventory")
            // Orders: the reservation's answer waits for the saga's row.
            let saga = try await fleet.holdLocks(["SELECT 1 FROM orders.sagas WHERE id = '\(id)' FOR UPDATE"])
            try await stock.release()
            try await fleet.waitReady("inventory")
            try await fleet.waitUntilBlocked("orders")
            try await fleet.kill("orders")
            // Notifications: the confirmation's notification waits for its table.
            let notifications = try await fleet.holdLocks(["LOCK TABLE notifications.notifications IN EXCLUSIVE MODE"])
            try await saga.release()
            try await fleet.waitReady("orders")
            try await fleet.waitUntilBlocked("notifications")
            try await fleet.kill("notifications")
            try await notifications.release()
            try await fleet.waitReady("notifications")

            let order = try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(60))
            #expect(order.status == "completed")
            #expect(try await fleet.stock("MUG-KILLS") == (onHand: 3, reserved: 0))
            #expect(try await fleet.sandboxStats().intentsPerOrder[id] == 1)
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND status = 'sent'", [id])) == 1
            }
            #expect(try fleet.mails().count == 1)
        }
    }

    /// One saga whose timeout cannot be handled (its row names a state the definition does not
    /// know), and one reservation whose release fails (its line holds more than is reserved), both
    /// due first: the other sagas' timeouts and the other reservations' expiries still happen.
    @Test func aTimeoutOrExpiryThatFailsDoesNotStopTheOthers() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT": "1s"]) { fleet in
            let mug = CheckoutFleet.product("MUG-PASS", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            for statement in [
                """
                INSERT INTO orders.sagas (id, saga_type, state, data, timeout_name, timeout_due_at)
                VALUES ('broken-saga', 'checkout', 'no-such-state', '{}', 'reserving_stock', now() - interval '1 hour')
                """,
                "INSERT INTO inventory.stock (sku, on_hand, reserved) VALUES ('BROKEN-SKU', 5, 0)",
                "INSERT INTO inventory.reservations (id, status, expires_at) VALUES ('broken-reservation', 'reserved', now() - interval '1 hour')",
                "INSERT INTO inventory.reservation_lines (reservation_id, sku, quantity) VALUES ('broken-reservation', 'BROKEN-SKU', 3)",
            ] {
                try await fleet.database.query(statement)
            }
            // The gateway fails every call: only the payment timeout moves this order on.
            var broken = PaymentsSandbox.Faults()
            broken.failureRate = 1
            try await fleet.setFaults(broken)
            let id = try await fleet.placeOrder([(mug, 1)])
            try await fleet.waitForSaga(id, in: ["voiding_payment", "releasing_stock", "cancelled", "compensation_failed"], deadline: .seconds(30))
            // A reservation nobody commits expires.
            try await fleet.send(ReserveStock(reservationID: "lonely", lines: [StockLine(sku: mug.sku, quantity: 1)], ttlSeconds: 1))
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = 'lonely' AND status = 'released' AND reason = 'expired'")) == 1
            }
            // The broken ones wait, postponed, for someone to look at them.
            #expect(try await fleet.count("SELECT count(*) FROM orders.sagas WHERE id = 'broken-saga' AND timeout_due_at > now()") == 1)
            #expect(try await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = 'broken-reservation' AND status = 'reserved' AND expires_at > now()") == 1)
            try await fleet.setFaults(PaymentsSandbox.Faults())
        }
    }
}
