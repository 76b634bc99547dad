public import Contracts
public import Messaging
import FoundationEssentials
import Logging
public import PostgresClient

/// Payments for orders through a Stripe-compatible gateway. One row per order, locked by every
/// command for it, so an authorization and a void for the same order never cross. The gateway
/// sees `<order>:<step>` as the idempotency key (the order id is the checkout saga's id).
public enum PaymentsService {
    public static let schema = "payments"

    public static let migrations = [
        Migration(version: 100, name: "payments", sql: """
            -- status: pending, authorized, declined, captured, voided, refunded, failed
            CREATE TABLE payments (
                order_id text PRIMARY KEY,
                status text NOT NULL,
                amount bigint,
                currency text,
                payment_intent_id text,
                refund_id text,
                decline_code text,
                message text,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE gateway_calls (
                id bigserial PRIMARY KEY,
                order_id text NOT NULL,
                operation text NOT NULL,
                idempotency_key text NOT NULL,
                outcome text NOT NULL,
                at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX gateway_calls_order ON gateway_calls (order_id);
            """),
    ]

    public static func definition(gateway: PaymentGateway, schema: String = schema) -> WorkerDefinition {
        let tables = Tables(schema: schema)
        var handlers = HandlerRegistry()

        handlers.on(AuthorizePayment.self) { command, context in
            let id = command.orderID
            try context.write("""
                INSERT INTO \(tables.payments) (order_id, status, amount, currency) VALUES ($1, 'pending', $2, $3) ON CONFLICT (order_id) DO NOTHING
                """, [id, command.amount.amount, command.amount.currency])
            let payment = try await tables.lock(id, context)
            switch payment.status {
            case "pending":
                let key = idempotencyKey(context, id, "authorize")
                do {
                    let intent = try await gateway.authorize(amount: command.amount.amount, currency: command.amount.currency,
                                                             paymentMethod: command.paymentMethod, orderID: id, idempotencyKey: key)
                    try tables.record(id, "authorize", key, "authorized \(intent.id)", context)
                    try tables.update(id, status: "authorized", intentID: intent.id, context)
                    try await context.publish(PaymentAuthorized(orderID: id, paymentIntentID: intent.id, amount: command.amount))
                } catch PaymentGateway.Failure.declined(let code, let declineCode, let message) {
                    try tables.record(id, "authorize", key, "declined \(declineCode)", context)
                    try tables.update(id, status: "declined", declineCode: declineCode, message: message, context)
                    try await context.publish(PaymentDeclined(orderID: id, code: code, declineCode: declineCode, message: message))
                } catch let failure as PaymentGateway.Failure {
                    guard case .rejected = failure else { throw failure }  // unavailable: retried through the tiers
                    try tables.record(id, "authorize", key, "rejected: \(failure)", context)
                    try tables.update(id, status: "failed", message: failure.description, context)
                    try await context.publish(PaymentOperationFailed(orderID: id, operation: "authorize", reason: failure.description))
                }
            case "authorized", "captured":
                // Asked again (a saga re-driving its step): the same answer.
                try await context.publish(PaymentAuthorized(orderID: id, paymentIntentID: payment.intentID ?? "", amount: command.amount))
            case "declined":
                try await context.publish(PaymentDeclined(orderID: id, code: "card_declined", declineCode: payment.declineCode ?? "generic_decline",
                                                          message: payment.message ?? "declined"))
            default:
                // Voided before it arrived, or failed: nothing to authorize, and the saga already knows.
                context.logger.info("authorization not attempted", metadata: ["order_id": .string(id), "status": .string(payment.status)])
            }
        }

        handlers.on(CapturePayment.self) { command, context in
            let id = command.orderID
            guard let payment = try await tables.lockIfPresent(id, context) else {
                try await context.publish(PaymentOperationFailed(orderID: id, operation: "capture", reason: "no payment for order \(id)"))
                return
            }
            switch payment.status {
            case "authorized":
                let key = idempotencyKey(context, id, "capture")
                do {
                    let intent = try await gateway.capture(payment.intentID ?? "", idempotencyKey: key)
                    try tables.record(id, "capture", key, "captured \(intent.amountReceived)", context)
                    try tables.update(id, status: "captured", context)
                    try await context.publish(PaymentCaptured(orderID: id, paymentIntentID: intent.id,
                                                              amount: Money(amount: intent.amountReceived, currency: intent.currency.uppercased())))
                } catch let failure as PaymentGateway.Failure {
                    if case .unavailable = failure { throw failure }
                    try tables.record(id, "capture", key, "failed: \(failure)", context)
                    try await context.publish(PaymentOperationFailed(orderID: id, operation: "capture", reason: failure.description))
                }
            case "captured":
                try await context.publish(PaymentCaptured(orderID: id, paymentIntentID: payment.intentID ?? "",
                                                          amount: Money(amount: payment.amount ?? 0, currency: payment.currency ?? "")))
            default:
                try await context.publish(PaymentOperationFailed(orderID: id, operation: "capture", reason: "the payment is \(payment.status)"))
            }
        }

        handlers.on(VoidPayment.self) { command, context in
            let id = command.orderID
            // A void that comes first leaves a voided row: the authorization, when it arrives, does nothing.
            try context.write("""
                INSERT INTO \(tables.payments) (order_id, status, message) VALUES ($1, 'pending', $2) ON CONFLICT (order_id) DO NOTHING
                """, [id, "void arrived before the authorization"])
            let payment = try await tables.lock(id, context)
            var intentID = payment.intentID
            var held = payment.status == "authorized"
            switch payment.status {
            case "captured", "refunded":
                try await context.publish(PaymentOperationFailed(orderID: id, operation: "void", reason: "the payment is already \(payment.status)"))
                return
            case "voided":
                try await context.publish(PaymentVoided(orderID: id, hadAuthorization: intentID != nil))
                return
            case "pending":
                // The authorization's outcome is unknown (it timed out, or has not been handled yet).
                // Asking again under its idempotency key gives the gateway's answer to the first
                // request if there was one, so an authorization that did go through is voided below.
                if let amount = command.amount, let method = command.paymentMethod {
                    let key = idempotencyKey(context, id, "authorize")
                    do {
                        let intent = try await gateway.authorize(amount: amount.amount, currency: amount.currency, paymentMethod: method,
                                                                 orderID: id, idempotencyKey: key)
                        try tables.record(id, "authorize", key, "replayed for the void: \(intent.status) \(intent.id)", context)
                        intentID = intent.id
                        held = intent.status == "requires_capture"
                    } catch let failure as PaymentGateway.Failure {
                        if case .unavailable = failure { throw failure }
                        try tables.record(id, "authorize", key, "replayed for the void: \(failure)", context)
                    }
                }
            default:
                break  // authorized: void it below; declined or failed: nothing is held
            }
            if let intentID, held {
                let key = idempotencyKey(context, id, "void")
                do {
                    _ = try await gateway.cancel(intentID, idempotencyKey: key)
                    try tables.record(id, "void", key, "canceled \(intentID)", context)
                } catch let failure as PaymentGateway.Failure {
                    if case .unavailable = failure { throw failure }
                    try tables.record(id, "void", key, "failed: \(failure)", context)
                    try await context.publish(PaymentOperationFailed(orderID: id, operation: "void", reason: failure.description))
                    return
                }
            }
            try tables.update(id, status: "voided", intentID: intentID, message: command.reason, context)
            try await context.publish(PaymentVoided(orderID: id, hadAuthorization: intentID != nil))
        }

        handlers.on(RefundPayment.self) { command, context in
            let id = command.orderID
            guard let payment = try await tables.lockIfPresent(id, context), payment.status == "captured" || payment.status == "refunded" else {
                try await context.publish(PaymentOperationFailed(orderID: id, operation: "refund", reason: "nothing captured for order \(id)"))
                return
            }
            if payment.status == "refunded" {
                try await context.publish(PaymentRefunded(orderID: id, refundID: payment.refundID ?? "",
                                                          amount: Money(amount: payment.amount ?? 0, currency: payment.currency ?? "")))
                return
            }
            let key = idempotencyKey(context, id, "refund")
            do {
                let refund = try await gateway.refund(payment.intentID ?? "", idempotencyKey: key)
                try tables.record(id, "refund", key, "refunded \(refund.id)", context)
                try tables.update(id, status: "refunded", refundID: refund.id, message: command.reason, context)
                try await context.publish(PaymentRefunded(orderID: id, refundID: refund.id,
                                                          amount: Money(amount: refund.amount, currency: refund.currency.uppercased())))
            } catch let failure as PaymentGateway.Failure {
                if case .unavailable = failure { throw failure }
                try await context.publish(PaymentOperationFailed(orderID: id, operation: "refund", reason: failure.description))
            }
        }

        return WorkerDefinition(service: "payments", schema: schema, queues: ["payments.commands"],
                                migrations: migrations, handlers: handlers)
    }

    /// `<saga>:<step>`: the same for every retry of one step, different for each step.
    static func idempotencyKey(_ context: HandlerContext, _ orderID: String, _ step: String) -> String {
        "\(context.envelope.sagaID ?? orderID):\(step)"
    }

    struct Tables: Sendable {
        let payments: String
        let calls: String
        init(schema: String) {
            payments = "\(quoteIdentifier(schema)).payments"
            calls = "\(quoteIdentifier(schema)).gateway_calls"
        }

        struct Payment {
            var status: String
            var intentID: String?
            var refundID: String?
            var amount: Int?
            var currency: String?
            var declineCode: String?
            var message: String?
        }

        func lockIfPresent(_ id: String, _ context: HandlerContext) async throws -> Payment? {
            let rows = try await context.database.query("""
                SELECT status, payment_intent_id, refund_id, amount, currency, decline_code, message FROM \(payments) WHERE order_id = $1 FOR UPDATE
                """, [id])
            guard rows.count == 1 else { return nil }
            let row = rows[0]
            return Payment(status: try row.decode(String.self, 0), intentID: try row.decode(String?.self, 1), refundID: try row.decode(String?.self, 2),
                           amount: try row.decode(Int?.self, 3), currency: try row.decode(String?.self, 4),
                           declineCode: try row.decode(String?.self, 5), message: try row.decode(String?.self, 6))
        }

        func lock(_ id: String, _ context: HandlerContext) async throws -> Payment {
            guard let payment = try await lockIfPresent(id, context) else { throw MessagingError("payment row for order \(id) vanished") }
            return payment
        }

        func update(_ id: String, status: String, intentID: String? = nil, refundID: String? = nil, declineCode: String? = nil,
                    message: String? = nil, _ context: HandlerContext) throws {
            try context.write("""
                UPDATE \(payments) SET status = $2, payment_intent_id = coalesce($3, payment_intent_id), refund_id = coalesce($4, refund_id),
                    decline_code = coalesce($5, decline_code), message = coalesce($6, message), updated_at = now()
                WHERE order_id = $1
                """, [id, status, intentID, refundID, declineCode, message])
        }

        func record(_ id: String, _ operation: String, _ key: String, _ outcome: String, _ context: HandlerContext) throws {
            try context.write(
                "INSERT INTO \(calls) (order_id, operation, idempotency_key, outcome) VALUES ($1, $2, $3, $4)", [id, operation, key, outcome])
        }
    }
}
