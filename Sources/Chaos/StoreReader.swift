import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import PostgresClient
import RabbitManagement

/// Reads what a chaos run needs to know from each service's own store: the orders, the stock,
/// the gateway's ledger, the mails the sink received, the dead letters, the queues and outboxes.
struct StoreReader: Sendable {
    let database: PostgresClient
    let management: RabbitManagement
    let vhost: String
    let sandboxPort: Int
    let sandboxKey: String
    let maildir: String

    /// The schemas whose outbox the run checks.
    static let schemas = ["catalog", "inventory", "orders", "payments", "notifications", "search", "identity", "cart", "deadletters"]

    /// Accepted orders not yet terminal, open sagas and unpublished outbox rows: what quiescence
    /// waits for, cheap enough to ask every second.
    func unsettled(_ accepted: [String]) async throws -> (orders: Int, sagas: Int, outbox: Int) {
        let orders = try await database.query(
            "SELECT count(*) FROM unnest($1::text[]) AS a(id) LEFT JOIN orders.orders o ON o.id = a.id WHERE o.status IS NULL OR o.status NOT IN ('completed', 'cancelled')",
            [accepted])[0].decode(Int.self, 0)
        let sagas = try await database.query("SELECT count(*) FROM orders.sagas WHERE NOT terminal")[0].decode(Int.self, 0)
        var outbox = 0
        for schema in Self.schemas {
            outbox += try await database.query("SELECT count(*) FROM \(quoteIdentifier(schema)).outbox WHERE published_at IS NULL")[0].decode(Int.self, 0)
        }
        return (orders, sagas, outbox)
    }

    /// Messages per queue of the run's vhost (the management API's view, a few seconds old).
    func queues() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for queue in try await management.queues(vhost: vhost) {
            guard case .string(let name)? = queue["name"] else { continue }
            if case .int(let messages)? = queue["messages"] { out[name] = messages } else { out[name] = 0 }
        }
        return out
    }

    func snapshot(webhooks: [LedgerSnapshot.Delivery]?) async throws -> LedgerSnapshot {
        var snapshot = LedgerSnapshot()
        let orders = try await database.query("""
            SELECT o.id, o.status, o.status_reason, o.total_amount, s.state, o.updated_at,
                   coalesce((SELECT json_object_agg(l.sku, l.quantity) FROM orders.order_lines l WHERE l.order_id = o.id), '{}')::text
            FROM orders.orders o LEFT JOIN orders.sagas s ON s.id = o.id
            """)
        for index in 0..<orders.count {
            let row = orders[index]
            let lines = try JSONDecoder().decode([String: Int].self, from: Data(try row.decode(String.self, 6).utf8))
            let order = LedgerSnapshot.Order(id: try row.decode(String.self, 0), status: try row.decode(String.self, 1),
                                             reason: try row.decode(String?.self, 2), total: try row.decode(Int.self, 3),
                                             sagaState: try row.decode(String?.self, 4), updatedAt: try row.decode(Date.self, 5), lines: lines)
            snapshot.orders[order.id] = order
        }
        let stock = try await database.query("SELECT sku, on_hand, reserved FROM inventory.stock")
        for index in 0..<stock.count {
            snapshot.stock[try stock[index].decode(String.self, 0)] = .init(onHand: try stock[index].decode(Int.self, 1),
                                                                             reserved: try stock[index].decode(Int.self, 2))
        }
        let open = try await database.query("SELECT id FROM inventory.reservations WHERE status IN ('reserved', 'pending')")
        snapshot.openReservations = try (0..<open.count).map { try open[$0].decode(String.self, 0) }
        snapshot.intents = try await intents()
        snapshot.mails = try mails()
        snapshot.webhooks = webhooks
        let letters = try await database.query("SELECT id, message_id, type, failed_queue, error_type, reason FROM deadletters.letters")
        snapshot.deadLetters = try (0..<letters.count).map { index in
            let row = letters[index]
            return LedgerSnapshot.Letter(id: try row.decode(String.self, 0), messageID: try row.decode(String.self, 1), type: try row.decode(String.self, 2),
                                         queue: try row.decode(String.self, 3), errorType: try row.decode(String.self, 4), reason: try row.decode(String.self, 5))
        }
        snapshot.queues = try await queues()
        for schema in Self.schemas {
            snapshot.unpublishedOutbox[schema] = try await database.query(
                "SELECT count(*) FROM \(quoteIdentifier(schema)).outbox WHERE published_at IS NULL")[0].decode(Int.self, 0)
        }
        let sagas = try await database.query("SELECT id, state FROM orders.sagas WHERE NOT terminal")
        for index in 0..<sagas.count { snapshot.openSagas[try sagas[index].decode(String.self, 0)] = try sagas[index].decode(String.self, 1) }
        let overdue = try await database.query("""
            SELECT id FROM orders.sagas WHERE timeout_due_at < now() - interval '5 seconds'
            UNION SELECT saga_id FROM orders.saga_timeouts WHERE due_at < now() - interval '5 seconds'
            """)
        snapshot.overdueTimeouts = try (0..<overdue.count).map { try overdue[$0].decode(String.self, 0) }
        snapshot.pendingNotifications = try await database.query(
            "SELECT count(*) FROM notifications.notifications WHERE status = 'pending'")[0].decode(Int.self, 0)
        return snapshot
    }

    /// The gateway's ledger, from the sandbox.
    func intents() async throws -> [LedgerSnapshot.Intent] {
        struct Intent: Decodable {
            var id: String
            var status: String
            var amount: Int
            var amount_received: Int
            var metadata: [String: String]?
        }
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(sandboxPort)/_sandbox/intents")
        request.headers.add(name: "Authorization", value: "Bearer \(sandboxKey)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        guard response.status == .ok else { throw ScenarioError("the sandbox answered \(response.status) when asked for its ledger") }
        let body = try await response.body.collect(upTo: 64 << 20)
        return try JSONDecoder().decode([Intent].self, from: Data(body.readableBytesView)).map {
            LedgerSnapshot.Intent(id: $0.id, orderID: $0.metadata?["order_id"], status: $0.status, amount: $0.amount, amountReceived: $0.amount_received)
        }
    }

    /// What the SMTP sink received (a Maildir): the order, the event and the Message-ID of each.
    func mails() throws -> [LedgerSnapshot.Delivery] {
        let directory = maildir + "/new"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name in
            guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)") else { return nil }
            var order = "", event = "", id = ""
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
                let text = line.hasSuffix("\r") ? line.dropLast() : line
                if text.isEmpty { break }  // the end of the headers
                guard let colon = text.firstIndex(of: ":") else { continue }
                let value = String(text[text.index(after: colon)...].drop { $0 == " " })
                switch text[..<colon].lowercased() {
                case "x-shopfleet-order": order = value
                case "x-shopfleet-event": event = value
                case "message-id": id = value
                default: break
                }
            }
            return LedgerSnapshot.Delivery(orderID: order, event: event, deliveryID: id)
        }
    }
}
