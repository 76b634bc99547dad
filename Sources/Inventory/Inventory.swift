public import Contracts
public import Messaging
import FoundationEssentials
import Logging
public import PostgresClient

/// Stock per SKU and reservations against it. A reservation holds every line of an order or none;
/// stock rows are locked in SKU order, and a CHECK keeps `reserved <= on_hand`, so concurrent
/// orders for the last units can never oversell.
public enum InventoryService {
    public static let schema = "inventory"

    public static let migrations = [
        Migration(version: 100, name: "stock_and_reservations", sql: """
            CREATE TABLE stock (
                sku text PRIMARY KEY,
                on_hand integer NOT NULL CHECK (on_hand >= 0),
                reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
                updated_at timestamptz NOT NULL DEFAULT now(),
                CHECK (reserved <= on_hand)
            );
            -- status: reserved, committed, released (also a release that came first), failed
            CREATE TABLE reservations (
                id text PRIMARY KEY,
                status text NOT NULL,
                reason text,
                expires_at timestamptz,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX reservations_expiring ON reservations (expires_at) WHERE status = 'reserved';
            CREATE TABLE reservation_lines (
                reservation_id text NOT NULL REFERENCES reservations (id),
                sku text NOT NULL,
                quantity integer NOT NULL CHECK (quantity > 0),
                PRIMARY KEY (reservation_id, sku)
            );
            """),
    ]

    public static func definition(schema: String = schema) -> WorkerDefinition {
        let tables = Tables(schema: schema)
        var handlers = HandlerRegistry()

        handlers.on(ReserveStock.self) { command, context in
            try await reserve(command, tables, context)
        }
        handlers.on(CommitReservation.self) { command, context in
            guard let reservation = try await tables.lockReservation(command.reservationID, context) else {
                try await context.publish(ReservationCommitFailed(reservationID: command.reservationID, reason: "no such reservation"))
                return
            }
            switch reservation.status {
            case "reserved":
                for line in try await tables.lines(of: command.reservationID, context) {
                    try context.write(
                        "UPDATE \(tables.stock) SET on_hand = on_hand - $2, reserved = reserved - $2, updated_at = now() WHERE sku = $1",
                        [line.sku, line.quantity])
                }
                try tables.setStatus(command.reservationID, "committed", reason: nil, context)
                try await context.publish(ReservationCommitted(reservationID: command.reservationID))
            case "committed":
                try await context.publish(ReservationCommitted(reservationID: command.reservationID))
            default:
                let reason = reservation.status == "released" ? "the reservation was released (\(reservation.reason ?? "no reason"))"
                    : "the reservation is \(reservation.status)"
                try await context.publish(ReservationCommitFailed(reservationID: command.reservationID, reason: reason))
            }
        }
        handlers.on(ReleaseReservation.self) { command, context in
            try await release(command.reservationID, reason: command.reason, tables, context)
        }
        handlers.on(AdjustStock.self) { command, context in
            let rows: PostgresRows
            do {
                rows = try await context.database.query("""
                    INSERT INTO \(tables.stock) (sku, on_hand) VALUES ($1, $2)
                    ON CONFLICT (sku) DO UPDATE SET on_hand = stock.on_hand + $2, updated_at = now()
                    RETURNING on_hand, reserved
                    """, [command.sku, command.delta])
            } catch let error as PostgresError where error.sqlState == "23514" {
                throw PermanentFailure("validation", "adjusting \(command.sku) by \(command.delta) would leave less on hand than reserved, or below zero")
            }
            let onHand = try rows[0].decode(Int.self, 0)
            let reserved = try rows[0].decode(Int.self, 1)
            try await context.publish(StockAdjusted(sku: command.sku, onHand: onHand, available: onHand - reserved))
        }
        handlers.answer(GetStock.self) { query, context in
            let rows = try await context.database.query(
                "SELECT sku, on_hand, reserved FROM \(tables.stock) WHERE sku = ANY($1) ORDER BY sku", [query.skus])
            return try (0..<rows.count).map { index in
                let onHand = try rows[index].decode(Int.self, 1)
                let reserved = try rows[index].decode(Int.self, 2)
                return GetStock.Level(sku: try rows[index].decode(String.self, 0), onHand: onHand, reserved: reserved,
                                      available: onHand - reserved)
            }
        }

        handlers.beforeBatch { messages, database in
            try await tables.lockStock(of: messages, database)
            return nil
        }

        let expiry = ScheduledJob("release-expired-reservations", every: .seconds(2)) { job in
            try await releaseExpired(tables, job)
        }
        return WorkerDefinition(service: "inventory", schema: schema, queues: ["inventory.commands", "inventory.queries"],
                                migrations: migrations, handlers: handlers, jobs: [expiry])
    }

    static func reserve(_ command: ReserveStock, _ tables: Tables, _ context: HandlerContext) async throws {
        let id = command.reservationID
        let created = try await context.database.query("""
            INSERT INTO \(tables.reservations) (id, status, expires_at) VALUES ($1, 'pending', now() + make_interval(secs => $2))
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """, [id, command.ttlSeconds])
        if created.count == 0 {
            // Asked again (a saga retrying): say again what happened the first time.
            guard let existing = try await tables.lockReservation(id, context) else { return }
            switch existing.status {
            case "reserved", "committed":
                try await context.publish(StockReserved(reservationID: id, lines: try await tables.lines(of: id, context),
                                                        expiresAt: existing.expiresAt ?? ""))
            default:
                try await context.publish(StockReservationFailed(reservationID: id, reason: existing.reason ?? existing.status, shortages: []))
            }
            return
        }
        // Lock the stock rows in one order (by SKU), so that two reservations never wait on each other.
        let lines = command.lines.sorted { $0.sku < $1.sku }
        let rows = try await context.database.query(
            "SELECT sku, on_hand - reserved FROM \(tables.stock) WHERE sku = ANY($1) ORDER BY sku FOR UPDATE", [lines.map(\.sku)])
        var available: [String: Int] = [:]
        for index in 0..<rows.count {
            available[try rows[index].decode(String.self, 0)] = try rows[index].decode(Int.self, 1)
        }
        let shortages = lines.compactMap { line -> StockReservationFailed.Shortage? in
            let have = available[line.sku] ?? 0
            return have >= line.quantity ? nil : .init(sku: line.sku, requested: line.quantity, available: have)
        }
        if !shortages.isEmpty {
            let reason = "out of stock: " + shortages.map { "\($0.sku) (asked \($0.requested), \($0.available) available)" }.joined(separator: ", ")
            try tables.setStatus(id, "failed", reason: reason, context)
            try await context.publish(StockReservationFailed(reservationID: id, reason: reason, shortages: shortages))
            return
        }
        for line in lines {
            try await tables.changeReserved(line.sku, by: line.quantity, context)
            try context.write(
                "INSERT INTO \(tables.reservationLines) (reservation_id, sku, quantity) VALUES ($1, $2, $3)", [id, line.sku, line.quantity])
        }
        let expires = try await context.database.query(
            "UPDATE \(tables.reservations) SET status = 'reserved', updated_at = now() WHERE id = $1 RETURNING expires_at", [id])
        try await context.publish(StockReserved(reservationID: id, lines: command.lines,
                                                expiresAt: try expires[0].decode(Date.self, 0).formatted(.iso8601)))
    }

    /// Gives the reservation's stock back: reserved units stop being reserved; committed units go
    /// back on hand. Releasing one that never arrived leaves a `released` row, so that the
    /// reservation, if it comes late, reserves nothing.
    static func release(_ id: String, reason: String, _ tables: Tables, _ context: HandlerContext) async throws {
        let tombstone = try await context.database.query("""
            INSERT INTO \(tables.reservations) (id, status, reason) VALUES ($1, 'released', $2) ON CONFLICT (id) DO NOTHING RETURNING 1
            """, [id, "released before it arrived: \(reason)"])
        if tombstone.count == 0, let reservation = try await tables.lockReservation(id, context) {
            switch reservation.status {
            case "reserved":
                for line in try await tables.lines(of: id, context) {
                    try await tables.changeReserved(line.sku, by: -line.quantity, context)
                }
            case "committed":
                for line in try await tables.lines(of: id, context) {
                    try context.write(
                        "UPDATE \(tables.stock) SET on_hand = on_hand + $2, updated_at = now() WHERE sku = $1", [line.sku, line.quantity])
                }
            default:
                break  // failed or released: nothing is held
            }
            if reservation.status != "released" {
                try tables.setStatus(id, "released", reason: reason, context)
            }
        }
        try await context.publish(ReservationReleased(reservationID: id, reason: reason))
    }

    /// Releases reservations past their expiry, each in a transaction of its own; one that cannot
    /// be released is logged and looked at again a minute later, and the others go on.
    static func releaseExpired(_ tables: Tables, _ job: JobContext) async throws {
        let due = try await job.database.query(
            "SELECT id FROM \(tables.reservations) WHERE status = 'reserved' AND expires_at < now() ORDER BY expires_at LIMIT 100")
        for index in 0..<due.count {
            let id = try due[index].decode(String.self, 0)
            _ = try await job.isolated("the expiry of reservation \(id)", sagaID: id, postpone: { database in
                try await database.query(
                    "UPDATE \(tables.reservations) SET expires_at = now() + interval '1 minute' WHERE id = $1 AND status = 'reserved'", [id])
            }) { context in
                // Another replica may have released it, or the order committed it, meanwhile.
                let still = try await context.database.query(
                    "SELECT 1 FROM \(tables.reservations) WHERE id = $1 AND status = 'reserved' AND expires_at < now() FOR UPDATE SKIP LOCKED", [id])
                guard still.count == 1 else { return }
                try await release(id, reason: "expired", tables, context)
                job.logger.info("released an expired reservation", metadata: ["reservation_id": .string(id)])
            }
        }
    }

    struct Tables: Sendable {
        let stock: String
        let reservations: String
        let reservationLines: String

        init(schema: String) {
            let quoted = quoteIdentifier(schema)
            stock = "\(quoted).stock"
            reservations = "\(quoted).reservations"
            reservationLines = "\(quoted).reservation_lines"
        }

        struct Reservation {
            var status: String
            var reason: String?
            var expiresAt: String?
        }

        /// Locks, in SKU order and in one statement, every stock row that a batch's messages will
        /// change (``stockOf(_:)``). Two batches then wait for each other instead of each holding
        /// what the other needs next.
        func lockStock(of messages: [Envelope], _ database: PostgresConnection) async throws {
            let (skus, reservationIDs) = Self.stockOf(messages)
            if skus.isEmpty && reservationIDs.isEmpty { return }
            _ = try await database.query("""
                SELECT 1 FROM \(stock) WHERE sku IN (
                    SELECT unnest($1::text[]) UNION ALL SELECT sku FROM \(reservationLines) WHERE reservation_id = ANY($2::text[]))
                ORDER BY sku FOR UPDATE
                """, [skus, reservationIDs])
        }

        /// The stock rows messages will change: the SKUs of the reservations they ask for and of
        /// the adjustments, and the reservations they commit or release (whose lines name theirs).
        /// A message that cannot be read is left to its handler, which fails it. Not covered: the
        /// row an adjustment of a new SKU inserts, and the lines of a reservation not yet committed
        /// when a release for it is in the batch; those lock as their handlers come.
        static func stockOf(_ messages: [Envelope]) -> (skus: [String], reservationIDs: [String]) {
            var skus: [String] = []
            var reservationIDs: [String] = []
            func read<M: Message>(_ type: M.Type, _ envelope: Envelope) -> M? {
                try? MessageCodec.decode(M.self, from: envelope.body, typeName: envelope.type)
            }
            for envelope in messages {
                switch envelope.type {
                case ReserveStock.type: skus += read(ReserveStock.self, envelope)?.lines.map(\.sku) ?? []
                case AdjustStock.type: skus += read(AdjustStock.self, envelope).map { [$0.sku] } ?? []
                case CommitReservation.type: reservationIDs += read(CommitReservation.self, envelope).map { [$0.reservationID] } ?? []
                case ReleaseReservation.type: reservationIDs += read(ReleaseReservation.self, envelope).map { [$0.reservationID] } ?? []
                default: break
                }
            }
            return (skus, reservationIDs)
        }

        func lockReservation(_ id: String, _ context: HandlerContext) async throws -> Reservation? {
            let rows = try await context.database.query(
                "SELECT status, reason, expires_at FROM \(reservations) WHERE id = $1 FOR UPDATE", [id])
            guard rows.count == 1 else { return nil }
            return Reservation(status: try rows[0].decode(String.self, 0), reason: try rows[0].decode(String?.self, 1),
                               expiresAt: try rows[0].decode(Date?.self, 2)?.formatted(.iso8601))
        }

        func lines(of id: String, _ context: HandlerContext) async throws -> [StockLine] {
            let rows = try await context.database.query(
                "SELECT sku, quantity FROM \(reservationLines) WHERE reservation_id = $1 ORDER BY sku", [id])
            return try (0..<rows.count).map { StockLine(sku: try rows[$0].decode(String.self, 0), quantity: try rows[$0].decode(Int.self, 1)) }
        }

        /// Moves reserved stock; when the SKU runs out, or comes back, says so on the topic (what
        /// the search read model needs for its in-stock filter, without an event per order).
        func changeReserved(_ sku: String, by delta: Int, _ context: HandlerContext) async throws {
            let rows = try await context.database.query(
                "UPDATE \(stock) SET reserved = reserved + $2, updated_at = now() WHERE sku = $1 RETURNING on_hand - reserved", [sku, delta])
            guard rows.count == 1 else { return }
            let after = try rows[0].decode(Int.self, 0)
            let before = after + delta
            if (before > 0) != (after > 0) {
                try await context.publish(StockAvailabilityChanged(sku: sku, available: after))
            }
        }

        /// Sent with the transaction's next statement or its COMMIT.
        func setStatus(_ id: String, _ status: String, reason: String?, _ context: HandlerContext) throws {
            try context.write(
                "UPDATE \(reservations) SET status = $2, reason = coalesce($3, reason), updated_at = now() WHERE id = $1", [id, status, reason])
        }
    }
}
