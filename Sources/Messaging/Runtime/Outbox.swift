import AMQPClient
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Logging
import PostgresClient
import Synchronization

/// One message waiting in a service's outbox.
struct OutboxRecord: Sendable {
    var id: Int64
    var envelope: Envelope
    var exchange: String
    var routingKey: String

    /// Rows one outbox `INSERT` writes at most. A statement is prepared once per connection for
    /// each number of rows up to this, so it bounds how many the outbox adds to a connection's
    /// statement cache.
    static let rowsPerInsert = 16

    /// `($1, …, $11), ($12, …, $22), …` for 1 to ``rowsPerInsert`` rows (index: rows − 1), made
    /// once: a commit only joins its schema's table to the one for its number of rows.
    private static let valuesLists: [String] = (1...rowsPerInsert).map { count in
        (0..<count).map { row in
            "(" + (row * 11 + 1...row * 11 + 11).map { "$\($0)" }.joined(separator: ", ") + ")"
        }.joined(separator: ", ")
    }

    /// The statements writing `records` to the outbox: one `INSERT … VALUES` for up to
    /// ``rowsPerInsert`` rows, each returning its rows' ids and message ids in the order written
    /// (``assignIDs(_:from:)`` reads them). Sent with the transaction's COMMIT
    /// (``HandlerContext/commit()``): a batch's outbox is one statement instead of one per message.
    static func inserts(_ records: [OutboxRecord], schema: String) -> [PostgresStatement] {
        stride(from: 0, to: records.count, by: rowsPerInsert).map { start in
            let chunk = records[start..<min(start + rowsPerInsert, records.count)]
            var binds: [any PostgresEncodable] = []
            binds.reserveCapacity(chunk.count * 11)
            for record in chunk {
                let envelope = record.envelope
                binds += [envelope.messageID, envelope.type, record.exchange, record.routingKey, envelope.correlationID,
                          envelope.causationID, envelope.sagaID, envelope.traceparent, envelope.tracestate, envelope.replyTo,
                          Data(envelope.body)] as [any PostgresEncodable]
            }
            return PostgresStatement("""
                INSERT INTO \(quoteIdentifier(schema)).outbox
                    (message_id, type, exchange, routing_key, correlation_id, causation_id, saga_id, traceparent, tracestate, reply_to, body)
                VALUES \(valuesLists[chunk.count - 1])
                RETURNING id, message_id
                """, binds)
        }
    }

    /// Gives `records` the ids of their rows, from the results of ``inserts(_:schema:)`` (in the
    /// same order). PostgreSQL returns a multi-row `INSERT`'s rows in the order of its `VALUES`;
    /// each row's message id is checked against its record all the same, since a row deleted
    /// under the wrong record's confirm would be a message lost.
    static func assignIDs(_ records: inout [OutboxRecord], from results: some Collection<PostgresRows>) throws {
        var index = 0
        for rows in results {
            for row in rows {
                guard index < records.count else { throw MessagingError("the outbox INSERT returned more rows than it wrote") }
                let messageID = try row.decode(String.self, 1)
                guard messageID == records[index].envelope.messageID else {
                    throw MessagingError("the outbox INSERT returned message \(messageID) where \(records[index].envelope.messageID) was written")
                }
                records[index].id = try row.decode(Int64.self, 0)
                index += 1
            }
        }
        guard index == records.count else {
            throw MessagingError("the outbox INSERT returned \(index) ids for \(records.count) rows")
        }
    }

    static let columns = "id, message_id, type, exchange, routing_key, correlation_id, causation_id, saga_id, traceparent, tracestate, reply_to, body, extract(epoch from created_at)::bigint"

    init(row: PostgresRow) throws {
        id = try row.decode(Int64.self, 0)
        exchange = try row.decode(String.self, 3)
        routingKey = try row.decode(String.self, 4)
        envelope = Envelope(
            messageID: try row.decode(String.self, 1), type: try row.decode(String.self, 2),
            correlationID: try row.decode(String?.self, 5), timestamp: UInt64(try row.decode(Int64.self, 12)),
            causationID: try row.decode(String?.self, 6), sagaID: try row.decode(String?.self, 7),
            traceparent: try row.decode(String?.self, 8), tracestate: try row.decode(String?.self, 9),
            replyTo: try row.decode(String?.self, 10), body: Array(try row.decode(Data.self, 11)))
    }

    /// Publishes the row's message and waits for the broker's confirm. A command no queue takes is
    /// an error (mandatory), not a silent loss; an event nobody subscribed to is dropped, as a
    /// topic does.
    func publish(on channel: AMQPChannel) async throws {
        try await channel.publish(envelope.body, exchange: exchange, routingKey: routingKey,
                                  properties: envelope.properties, mandatory: exchange.isEmpty)
        if Chaos.duplicatePublishes {
            try await channel.publish(envelope.body, exchange: exchange, routingKey: routingKey,
                                      properties: envelope.properties, mandatory: exchange.isEmpty)
        }
    }

    /// The same without waiting: `confirmed` runs on the connection's thread with the outcome.
    func publish(on channel: AMQPChannel, confirmed: @escaping @Sendable ((any Error)?) -> Void) {
        if Chaos.duplicatePublishes {
            channel.publish(envelope.body, exchange: exchange, routingKey: routingKey,
                            properties: envelope.properties, mandatory: exchange.isEmpty) { _ in }
        }
        channel.publish(envelope.body, exchange: exchange, routingKey: routingKey,
                        properties: envelope.properties, mandatory: exchange.isEmpty, confirmed: confirmed)
    }

    init(id: Int64, envelope: Envelope, exchange: String, routingKey: String) {
        self.id = id
        self.envelope = envelope
        self.exchange = exchange
        self.routingKey = routingKey
    }
}

/// The outbox of one service: the relay's passes (rows a crash left behind), its lag, pruning.
/// Rows a handler just wrote go out through ``OutboxPipeline``.
struct OutboxPublisher: Sendable {
    var schema: String
    var channel: AMQPChannel
    var database: PostgresClient
    /// Told about rows a pass could not publish while it published others.
    var relayFailures: (@Sendable (MessagingError) -> Void)?

    /// One relay pass: rows older than `grace` that are still unpublished, oldest first, locked so
    /// that two replicas never publish the same row at once. Each row stands alone: one the broker
    /// refuses stays unpublished (and is tried again next pass) while the others are deleted.
    /// Returns how many were published; throws only when the database fails, or when every row
    /// failed (the broker is gone), naming the first failure.
    func relay(grace: Duration, limit: Int = 500) async throws -> Int {
        let table = "\(quoteIdentifier(schema)).outbox"
        let graceMilliseconds = Int64(grace.components.seconds * 1000 + grace.components.attoseconds / 1_000_000_000_000_000)
        return try await database.transaction { tx in
            let rows = try await tx.query("""
                SELECT \(OutboxRecord.columns) FROM \(table)
                WHERE published_at IS NULL AND created_at < clock_timestamp() - make_interval(secs => $1::double precision / 1000)
                ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
                """, [graceMilliseconds, limit])
            let records = try rows.map { try OutboxRecord(row: $0) }
            if records.isEmpty { return 0 }
            let channel = self.channel
            // Publish all, await all confirms.
            let outcomes = await withTaskGroup(of: (Int64, (any Error)?).self) { group in
                for record in records {
                    group.addTask {
                        do {
                            try await record.publish(on: channel)
                            return (record.id, nil)
                        } catch {
                            return (record.id, error)
                        }
                    }
                }
                var outcomes: [(Int64, (any Error)?)] = []
                for await outcome in group { outcomes.append(outcome) }
                return outcomes
            }
            let published = outcomes.filter { $0.1 == nil }.map(\.0)
            if !published.isEmpty {
                try await tx.query("DELETE FROM \(table) WHERE id = ANY($1)", [published])
            }
            let failures = outcomes.compactMap { id, error in error.map { (id, $0) } }
            if let (id, first) = failures.first {
                let failure = MessagingError("\(failures.count) of \(records.count) outbox rows not published (row \(id): \(first)); they stay for the next pass")
                if published.isEmpty { throw failure }
                relayFailures?(failure)
            }
            return published.count
        }
    }

    /// Deletes rows the broker confirmed, committed without waiting for the WAL to reach the disk
    /// (`synchronous_commit` off for this transaction alone; BEGIN, the setting, the DELETE and
    /// COMMIT go in one round trip). A crash of the database can lose the last such deletes, never
    /// anything else: the rows come back, the relay publishes them again, and the consumers'
    /// inboxes drop the copies — the same path as a worker that dies between confirm and delete.
    /// Every other commit (a handler's, with its inbox and outbox rows) still waits for the disk,
    /// and a later one flushes these with it.
    func deleteConfirmed(_ ids: [Int64]) async throws {
        _ = try await database.transaction { tx in
            try await tx.commit(after: [
                PostgresStatement("SELECT set_config('synchronous_commit', 'off', true)"),
                PostgresStatement("DELETE FROM \(quoteIdentifier(schema)).outbox WHERE id = ANY($1)", [ids]),
            ])
        }
    }

    /// Seconds the oldest unpublished row has waited (0 when none): the relay's lag.
    func lag() async throws -> Double {
        let rows = try await database.query(
            "SELECT coalesce(extract(epoch from clock_timestamp() - min(created_at)), 0)::double precision FROM \(quoteIdentifier(schema)).outbox WHERE published_at IS NULL")
        return try rows[0].decode(Double.self, 0)
    }

    /// Forgets inbox rows older than `retention`, and outbox rows an earlier version marked
    /// published instead of deleting them (`published_at`; this version deletes a row once the
    /// broker confirmed it).
    func prune(retention: Duration) async throws {
        let seconds = Int64(retention.components.seconds)
        try await database.query(
            "DELETE FROM \(quoteIdentifier(schema)).outbox WHERE published_at < now() - make_interval(secs => $1)", [seconds])
        try await database.query(
            "DELETE FROM \(quoteIdentifier(schema)).inbox WHERE processed_at < now() - make_interval(secs => $1)", [seconds])
    }
}

/// Publishes committed outbox rows without holding up the handlers: a handler's slot is free as
/// soon as its transaction committed and its delivery was acked, its rows are published with a
/// confirm callback (no task waits per message), and confirmed rows are deleted in batches by
/// `run` (a row's only reader is the relay: the consumers' inboxes are the record of what
/// arrived). The rows are durable: the relay publishes them if this process dies first. Bounded: when
/// `limit` rows wait for their confirm, the next handler waits for room.
final class OutboxPipeline: Sendable {
    let publisher: OutboxPublisher
    let logger: Logger
    private let room: AsyncSemaphore
    private let confirmed = Mutex<[Int64]>([])
    /// Published, confirm not yet in.
    private let outstanding = Atomic<Int>(0)
    private let finished = Atomic<Bool>(false)

    init(publisher: OutboxPublisher, logger: Logger, limit: Int = 1000) {
        self.publisher = publisher
        self.logger = logger
        self.room = AsyncSemaphore(limit)
    }

    /// Publishes records; waits while `limit` are unconfirmed.
    func submit(_ records: [OutboxRecord]) async {
        for record in records {
            await room.acquire()
            outstanding.add(1, ordering: .relaxed)
            record.publish(on: publisher.channel) { failure in
                if let failure {
                    // Unconfirmed: the relay publishes the row again (consumers' inboxes drop a copy).
                    self.logger.warning("outbox publish failed; the relay will publish it",
                                        metadata: ["outbox_id": .stringConvertible(record.id), "error": .string("\(failure)")])
                } else {
                    self.confirmed.withLock { $0.append(record.id) }
                }
                self.outstanding.subtract(1, ordering: .releasing)
                self.room.release()
            }
        }
    }

    /// No more records: `run` returns once those submitted are confirmed (or failed) and deleted.
    func finish() { finished.store(true, ordering: .releasing) }

    /// Deletes confirmed rows, a batch at a time, until `finish()` and the last confirm. A delete
    /// writes less than marking the row (`published_at`) did: no new row version, no index entries,
    /// and nothing for a later prune to remove.
    func run(published: @escaping @Sendable (Int) -> Void) async {
        while true {
            // Read before taking the batch: when nothing is outstanding, every confirm is in it.
            let done = finished.load(ordering: .acquiring) && outstanding.load(ordering: .acquiring) == 0
            let ids = confirmed.withLock { ids in
                defer { ids.removeAll(keepingCapacity: true) }
                return ids
            }
            if !ids.isEmpty {
                do {
                    try await publisher.deleteConfirmed(ids)
                    published(ids.count)
                } catch {
                    // Rows left are published again by the relay; consumers' inboxes drop the copies.
                    logger.warning("could not delete published outbox rows", metadata: ["error": .string("\(error)")])
                }
            }
            if done { return }
            // Passes every 10 ms while rows are confirmed. Passes every 100 ms saved about one
            // commit per order in `bench checkout`, but the place → confirmed latency at 20
            // orders/s rose from 24–48 to 45–205 ms in alternating runs (docs/benchmarks.md).
            try? await Task.sleep(for: .milliseconds(ids.isEmpty ? 20 : 10))
        }
    }
}

/// A counting semaphore for tasks: `acquire` suspends (it never blocks a thread) until a permit is free.
final class AsyncSemaphore: Sendable {
    private struct State {
        var permits: Int
        var waiters: [UnsafeContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ permits: Int) { state = Mutex(State(permits: permits)) }

    func acquire() async {
        let acquired = state.withLock { s -> Bool in
            if s.permits > 0 { s.permits -= 1; return true }
            return false
        }
        if acquired { return }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.permits > 0 { s.permits -= 1; return true }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func release() {
        let waiter = state.withLock { s -> UnsafeContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.permits += 1; return nil }
            return s.waiters.removeFirst()
        }
        waiter?.resume()
    }
}

/// Faults a chaos test switches on by environment, never set in production.
enum Chaos {
    /// `SHOPFLEET_CHAOS_DUPLICATE_PUBLISHES=1`: every outbox message is published twice, as an
    /// at-least-once broker may deliver it; the consumers' inboxes must make the copy a no-op.
    static let duplicatePublishes: Bool = {
        guard let value = getenv("SHOPFLEET_CHAOS_DUPLICATE_PUBLISHES") else { return false }
        return String(cString: value) == "1"
    }()
}
