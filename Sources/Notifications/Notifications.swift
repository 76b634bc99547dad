public import AsyncHTTPClient
public import Contracts
import FoundationEssentials
import Logging
public import Messaging
import NIOCore
import NIOHTTP1
public import PostgresClient

/// Tells customers what happened to their orders: an email for each confirmed or cancelled
/// order, and optionally a signed webhook call. Every notification is a row, unique per order,
/// event and channel, so an event delivered twice sends nothing twice. The email is sent while its
/// event is handled, its outcome committed with its row; a webhook call, and an email that failed
/// for now, go as a `DeliverNotification` of their own (retried through the tiers, dead-lettered
/// in the end). One transaction never holds two outside effects, so a failing webhook never
/// repeats an email.
public enum NotificationsService {
    public static let schema = "notifications"

    public struct Settings: Sendable {
        public var smtp: SMTPClient
        /// `Shopfleet <orders@example.com>`.
        public var from: String
        /// Where to POST order events, if anywhere.
        public var webhookURL: String?
        /// The HMAC-SHA256 key that signs webhook calls.
        public var webhookSecret: String
        public var http: HTTPClient
        public init(smtp: SMTPClient, from: String, webhookURL: String?, webhookSecret: String, http: HTTPClient = .shared) {
            self.smtp = smtp
            self.from = from
            self.webhookURL = webhookURL
            self.webhookSecret = webhookSecret
            self.http = http
        }
    }

    public static let migrations = [
        Migration(version: 100, name: "notifications", sql: """
            -- status: pending, sent, failed (refused for good; error says why)
            CREATE TABLE notifications (
                id bigserial PRIMARY KEY,
                order_id text NOT NULL,
                event text NOT NULL,
                channel text NOT NULL,
                recipient text NOT NULL,
                subject text NOT NULL,
                body text NOT NULL,
                status text NOT NULL DEFAULT 'pending',
                -- the delivery attempt that succeeded or was refused (failed attempts roll back)
                attempts integer NOT NULL DEFAULT 0,
                error text,
                created_at timestamptz NOT NULL DEFAULT now(),
                sent_at timestamptz,
                UNIQUE (order_id, event, channel)
            );
            """),
    ]

    public static func definition(_ settings: Settings, schema: String = schema) -> WorkerDefinition {
        let table = "\(quoteIdentifier(schema)).notifications"
        var handlers = HandlerRegistry()

        // Alone: an email or webhook sent by a batch that then rolled back would go again.
        handlers.on(OrderConfirmed.self, alone: true) { event, context in
            try await record(OrderConfirmed.type, order: event.order, subject: "Your Shopfleet order is confirmed",
                             body: confirmedBody(event.order), payload: try MessageCodec.encode(event), settings, table, context)
        }
        handlers.on(OrderCancelled.self, alone: true) { event, context in
            try await record(OrderCancelled.type, order: event.order, subject: "Your Shopfleet order was cancelled",
                             body: cancelledBody(event.order, reason: event.reason), payload: try MessageCodec.encode(event), settings, table, context)
        }
        handlers.on(DeliverNotification.self, alone: true) { command, context in
            try await deliver(command.notificationID, settings, table, context)
        }
        return WorkerDefinition(service: "notifications", schema: schema, queues: ["notifications.order-events", "notifications.commands"],
                                migrations: migrations, handlers: handlers)
    }

    /// One notification as recorded.
    struct Notification {
        var id: Int
        var order: String
        var event: String
        var channel: String
        var recipient: String
        var subject: String
        var body: String
    }

    /// What a delivery attempt that did not fail for now came to.
    enum Outcome {
        case delivered
        /// Refused for good (a 5xx from the mail server, a 4xx from the webhook): never tried again.
        case refused(String)
    }

    /// Records the event's notifications. Every row is written first, and every channel but the
    /// email handed to a `DeliverNotification` of its own (the webhook); then the email is sent at
    /// once, in the event's transaction, with no message to itself on the way. If it fails for now
    /// it stays `pending` and goes on as a `DeliverNotification` too, committed with the row. So no
    /// transaction holds two outside effects (one rolled back after the other went would send that
    /// one again), and nothing that can fail comes between the email and the commit but its own
    /// outcome.
    static func record(_ event: String, order: OrderSummary, subject: String, body: String, payload: Data, _ settings: Settings,
                       _ table: String, _ context: HandlerContext) async throws {
        var channels = [("email", order.customerEmail, subject, body)]
        if let url = settings.webhookURL {
            channels.append(("webhook", url, event, String(decoding: payload, as: UTF8.self)))
        }
        var email: Notification?
        for (channel, recipient, subject, body) in channels {
            let now = channel == "email"
            // `attempts` counts the attempt made now, which commits whatever it comes to.
            let inserted = try await context.database.query("""
                INSERT INTO \(table) (order_id, event, channel, recipient, subject, body, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (order_id, event, channel) DO NOTHING RETURNING id
                """, [order.orderID, event, channel, recipient, subject, body, now ? 1 : 0])
            guard inserted.count == 1 else {
                context.logger.info("notification already recorded", metadata: ["order_id": .string(order.orderID), "channel": .string(channel)])
                continue
            }
            let notification = Notification(id: try inserted[0].decode(Int.self, 0), order: order.orderID, event: event, channel: channel,
                                            recipient: recipient, subject: subject, body: body)
            if now {
                email = notification
            } else {
                try await context.send(DeliverNotification(notificationID: notification.id), sagaID: order.orderID)
            }
        }
        guard let email else { return }
        let outcome: Outcome
        do {
            outcome = try await transmit(email, settings)
        } catch {
            // The worker is stopping: the handler fails, as any other, and the event is tried again.
            if error is CancellationError || Task.isCancelled { throw error }
            context.logger.warning("notification not delivered yet; retrying it on its own", metadata: [
                "notification_id": .stringConvertible(email.id), "channel": .string(email.channel), "error": .string("\(error)")])
            try await context.send(DeliverNotification(notificationID: email.id), sagaID: order.orderID)
            return
        }
        try await settle(email, outcome, table, context)
    }

    /// Delivers a notification its event's handler did not: a webhook call, or an email that
    /// failed then. A failure for now is thrown: the command is retried through the tiers.
    static func deliver(_ id: Int, _ settings: Settings, _ table: String, _ context: HandlerContext) async throws {
        // The attempt number: this delivery's, after the one made with the event if there was one.
        let rows = try await context.database.query("""
            UPDATE \(table) SET attempts = $2 + least(attempts, 1) WHERE id = $1 AND status = 'pending'
            RETURNING order_id, event, channel, recipient, subject, body
            """, [id, context.envelope.attempt])
        guard rows.count == 1 else { return }  // delivered (or refused) already
        let row = rows[0]
        let notification = Notification(id: id, order: try row.decode(String.self, 0), event: try row.decode(String.self, 1),
                                        channel: try row.decode(String.self, 2), recipient: try row.decode(String.self, 3),
                                        subject: try row.decode(String.self, 4), body: try row.decode(String.self, 5))
        try await settle(notification, try await transmit(notification, settings), table, context)
    }

    /// Sends one notification over its channel. Throws when it failed for now (worth trying again).
    static func transmit(_ notification: Notification, _ settings: Settings) async throws -> Outcome {
        let (order, event) = (notification.order, notification.event)
        // The same for every attempt: a receiver that sees it twice can drop the copy.
        let deliveryID = "\(order).\(event)@shopfleet"
        do {
            switch notification.channel {
            case "email":
                try await settings.smtp.send(SMTPClient.Mail(
                    from: settings.from, to: notification.recipient, subject: notification.subject, body: notification.body,
                    headers: [("Message-ID", "<\(deliveryID)>"), ("X-Shopfleet-Order", order), ("X-Shopfleet-Event", event)]))
            case "webhook":
                try await postWebhook(to: notification.recipient, event: event, deliveryID: deliveryID, body: notification.body, settings)
            default:
                throw PermanentFailure("unknown-channel", "notification \(notification.id) has channel '\(notification.channel)'")
            }
        } catch let failure as SMTPClient.Failure where failure.permanent {
            return .refused(failure.description)
        } catch let failure as WebhookRefused {
            return .refused(failure.description)
        }
        return .delivered
    }

    /// Writes what the attempt came to, with the transaction that made it.
    static func settle(_ notification: Notification, _ outcome: Outcome, _ table: String, _ context: HandlerContext) async throws {
        switch outcome {
        case .delivered:
            try context.write("UPDATE \(table) SET status = 'sent', sent_at = now(), error = NULL WHERE id = $1", [notification.id])
            try await context.publish(NotificationSent(orderID: notification.order, event: notification.event, channel: notification.channel,
                                                       recipient: notification.channel == "email" ? notification.recipient : "webhook"),
                                      sagaID: notification.order)
        case .refused(let reason):
            try context.write("UPDATE \(table) SET status = 'failed', error = $2 WHERE id = $1", [notification.id, reason])
            context.logger.error("notification refused for good", metadata: [
                "notification_id": .stringConvertible(notification.id), "error": .string(reason)])
        }
    }

    struct WebhookRefused: Error, CustomStringConvertible {
        var description: String
    }

    /// POSTs the event with `X-Shopfleet-Signature: sha256=<hex>`, the HMAC-SHA256 of
    /// `<timestamp>.<body>` under the shared secret. 2xx is delivered; 4xx other than 408 and 429
    /// is refused for good; anything else is retried.
    static func postWebhook(to url: String, event: String, deliveryID: String, body: String, _ settings: Settings) async throws {
        let timestamp = String(Int(Date().timeIntervalSince1970))
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "X-Shopfleet-Event", value: event)
        request.headers.add(name: "X-Shopfleet-Delivery", value: deliveryID)
        request.headers.add(name: "X-Shopfleet-Timestamp", value: timestamp)
        request.headers.add(name: "X-Shopfleet-Signature",
                            value: "sha256=" + HMACSHA256.hex(key: Array(settings.webhookSecret.utf8), message: Array("\(timestamp).\(body)".utf8)))
        request.body = .bytes(ByteBuffer(string: body))
        let response: HTTPClientResponse
        do {
            response = try await settings.http.execute(request, timeout: .seconds(10))
        } catch {
            throw MessagingError("webhook \(url) unreachable: \(error)")
        }
        let code = Int(response.status.code)
        if (200..<300).contains(code) { return }
        if (400..<500).contains(code), code != 408, code != 429 {
            throw WebhookRefused(description: "webhook \(url) answered \(code) \(response.status.reasonPhrase)")
        }
        throw MessagingError("webhook \(url) answered \(code) \(response.status.reasonPhrase); will retry")
    }

    static func money(_ money: Money) -> String {
        let units = money.amount / 100
        let cents = money.amount % 100
        return "\(units).\(cents < 10 ? "0" : "")\(cents) \(money.currency)"
    }

    static func lines(_ order: OrderSummary) -> String {
        order.lines.map { "  \($0.quantity) × \($0.name) (\($0.sku))  \(money(Money(amount: $0.unitPrice.amount * $0.quantity, currency: $0.unitPrice.currency)))" }
            .joined(separator: "\n")
    }

    static func confirmedBody(_ order: OrderSummary) -> String {
        """
        Thank you for your order.

        Order \(order.orderID) is confirmed: the items are set aside for you and the payment is being taken.

        \(lines(order))

        Total: \(money(order.total))
        """
    }

    static func cancelledBody(_ order: OrderSummary, reason: String) -> String {
        """
        We are sorry: order \(order.orderID) was cancelled.

        Why: \(reason)

        \(lines(order))

        Nothing was charged for it.
        """
    }
}
