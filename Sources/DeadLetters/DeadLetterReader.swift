public import AMQPClient
public import Contracts
public import FoundationEssentials
public import Messaging
public import PostgresClient

/// One letter with everything stored about it: properties, headers, body, history.
public struct DeadLetterDetail: Sendable, Codable {
    public typealias Event = DeadLetterEvent

    public var letter: DeadLetter
    public var properties: JSONValue
    public var headers: JSONValue
    public var body: [UInt8]
    public var history: [Event]

    /// The body for a person: pretty JSON when it is JSON, the text when it is UTF-8, else hex.
    public var bodyText: String {
        if let value = try? JSONDecoder().decode(JSONValue.self, from: Data(body)) {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(value) { return String(decoding: data, as: UTF8.self) }
        }
        if let text = String(validating: body, as: UTF8.self) { return text }
        return "(\(body.count) bytes, not UTF-8, in hex) " + String(Data(body).postgresText!.dropFirst(2))
    }
}

/// Which letters: every condition given must hold.
public struct DeadLetterFilter: Sendable {
    public var ids: [String] = []
    public var queue: String?
    public var type: String?
    public var sagaID: String?
    public var fingerprint: String?
    /// Empty: any status.
    public var statuses: [String] = ["waiting"]
    /// Only letters whose last failure is at least this old.
    public var olderThan: Duration?
    /// Only letters whose last failure is at most this old.
    public var newerThan: Duration?
    public var limit = 100
    public init() {}

    /// Whether anything narrows the selection beyond its status (a replay or discard of everything
    /// must be asked for by name).
    public var isNarrowed: Bool {
        !ids.isEmpty || queue != nil || type != nil || sagaID != nil || fingerprint != nil || olderThan != nil || newerThan != nil
    }

    func sql(binds: inout [any PostgresEncodable]) -> String {
        var conditions: [String] = []
        func bind(_ value: any PostgresEncodable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        if !ids.isEmpty { conditions.append("id = ANY(\(bind(ids)))") }
        if let queue { conditions.append("failed_queue = \(bind(queue))") }
        if let type { conditions.append("type = \(bind(type))") }
        if let sagaID { conditions.append("saga_id = \(bind(sagaID))") }
        if let fingerprint { conditions.append("fingerprint = \(bind(fingerprint))") }
        if !statuses.isEmpty { conditions.append("status = ANY(\(bind(statuses)))") }
        if let olderThan { conditions.append("last_failed_at <= now() - make_interval(secs => \(bind(olderThan.seconds)))") }
        if let newerThan { conditions.append("last_failed_at >= now() - make_interval(secs => \(bind(newerThan.seconds)))") }
        return conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Reads the store.
public struct DeadLetterReader: Sendable {
    public let database: PostgresClient
    public init(database: PostgresClient) { self.database = database }

    static let columns = """
        id, message_id, type, failed_queue, exchange, routing_key, reason, error_type, attempts, failures, first_failed_at,
        last_failed_at, saga_id, fingerprint, status, status_changed_at, status_note, replays
        """

    static func letter(_ row: PostgresRow) throws -> DeadLetter {
        DeadLetter(id: try row.decode(String.self, 0), messageID: try row.decode(String.self, 1), type: try row.decode(String.self, 2),
                   failedQueue: try row.decode(String.self, 3), exchange: try row.decode(String.self, 4),
                   routingKey: try row.decode(String.self, 5), reason: try row.decode(String.self, 6),
                   errorType: try row.decode(String.self, 7), attempts: try row.decode(Int.self, 8), failures: try row.decode(Int.self, 9),
                   firstFailedAt: try row.decode(Date.self, 10), lastFailedAt: try row.decode(Date.self, 11),
                   sagaID: try row.decode(String?.self, 12), fingerprint: try row.decode(String.self, 13),
                   status: try row.decode(String.self, 14), statusChangedAt: try row.decode(Date?.self, 15),
                   statusNote: try row.decode(String?.self, 16), replays: try row.decode(Int.self, 17))
    }

    /// Letters, oldest failure first.
    public func letters(_ filter: DeadLetterFilter) async throws -> [DeadLetter] {
        var binds: [any PostgresEncodable] = []
        let conditions = filter.sql(binds: &binds)
        binds.append(filter.limit)
        let rows = try await database.query(
            "SELECT \(Self.columns) FROM \(DeadLetterStore.letters)\(conditions) ORDER BY first_failed_at, id LIMIT $\(binds.count)", binds)
        return try rows.map(Self.letter)
    }

    /// A saga's letters, in any status; none when the store has not been set up.
    public func letters(ofSaga id: String) async throws -> [DeadLetter] {
        var filter = DeadLetterFilter()
        filter.sagaID = id
        filter.statuses = []
        do {
            return try await letters(filter)
        } catch let error as PostgresError where error.sqlState == "42P01" || error.sqlState == "3F000" {
            return []
        }
    }

    /// Waiting letters per saga, for the sagas named; none when the store has not been set up.
    public func waitingCounts(sagas ids: [String]) async throws -> [String: Int] {
        guard !ids.isEmpty else { return [:] }
        do {
            let rows = try await database.query("""
                SELECT saga_id, count(*) FROM \(DeadLetterStore.letters)
                WHERE saga_id = ANY($1) AND status = 'waiting' GROUP BY saga_id
                """, [ids])
            var counts: [String: Int] = [:]
            for row in rows { counts[try row.decode(String.self, 0)] = try row.decode(Int.self, 1) }
            return counts
        } catch let error as PostgresError where error.sqlState == "42P01" || error.sqlState == "3F000" {
            return [:]
        }
    }

    /// For each saga named with waiting letters: how many, and the newest one's reason and type.
    public func newestWaiting(sagas ids: [String]) async throws -> [String: CountWaitingDeadLetters.Waiting] {
        guard !ids.isEmpty else { return [:] }
        let rows = try await database.query("""
            SELECT saga_id, count(*), (array_agg(reason ORDER BY last_failed_at DESC))[1], (array_agg(type ORDER BY last_failed_at DESC))[1]
            FROM \(DeadLetterStore.letters) WHERE saga_id = ANY($1) AND status = 'waiting' GROUP BY saga_id
            """, [ids])
        var found: [String: CountWaitingDeadLetters.Waiting] = [:]
        for row in rows {
            found[try row.decode(String.self, 0)] = .init(count: try row.decode(Int.self, 1), newestReason: try row.decode(String.self, 2),
                                                          newestType: try row.decode(String.self, 3))
        }
        return found
    }

    public func letter(_ id: String) async throws -> DeadLetterDetail? {
        let rows = try await database.query(
            "SELECT \(Self.columns), properties::text, headers::text, body FROM \(DeadLetterStore.letters) WHERE id = $1", [id])
        guard rows.count == 1 else { return nil }
        let row = rows[0]
        func json(_ column: Int) throws -> JSONValue {
            try JSONDecoder().decode(JSONValue.self, from: Data(try row.decode(String.self, column).utf8))
        }
        let events = try await database.query("""
            SELECT at, kind, detail, error_type, attempts FROM \(DeadLetterStore.history) WHERE letter_id = $1 ORDER BY at, seq
            """, [id])
        return DeadLetterDetail(
            letter: try Self.letter(row), properties: try json(18), headers: try json(19), body: Array(try row.decode(Data.self, 20)),
            history: try events.map { event in
                .init(at: try event.decode(Date.self, 0), kind: try event.decode(String.self, 1), detail: try event.decode(String.self, 2),
                      errorType: try event.decode(String?.self, 3), attempts: try event.decode(Int?.self, 4))
            })
    }

    /// Counts per fingerprint, the largest group first.
    public func groups(statuses: [String] = ["waiting"]) async throws -> [DeadLetterGroup] {
        var filter = DeadLetterFilter()
        filter.statuses = statuses
        var binds: [any PostgresEncodable] = []
        let conditions = filter.sql(binds: &binds)
        let rows = try await database.query("""
            SELECT fingerprint, type, failed_queue, error_type, count(*), min(first_failed_at), max(last_failed_at),
                   (array_agg(reason ORDER BY last_failed_at DESC))[1], (array_agg(id ORDER BY last_failed_at DESC))[1]
            FROM \(DeadLetterStore.letters)\(conditions)
            GROUP BY fingerprint, type, failed_queue, error_type
            ORDER BY count(*) DESC, min(first_failed_at)
            """, binds)
        return try rows.map { row in
            DeadLetterGroup(fingerprint: try row.decode(String.self, 0), type: try row.decode(String.self, 1),
                            failedQueue: try row.decode(String.self, 2), errorType: try row.decode(String.self, 3),
                            count: try row.decode(Int.self, 4), oldest: try row.decode(Date.self, 5), newest: try row.decode(Date.self, 6),
                            sampleError: try row.decode(String.self, 7), sampleId: try row.decode(String?.self, 8))
        }
    }

    /// Waiting letters per failed queue, and the age of the oldest, for the metrics.
    public func waiting() async throws -> (perQueue: [String: Int], oldestAge: Double) {
        let rows = try await database.query("""
            SELECT failed_queue, count(*), extract(epoch FROM now() - min(first_failed_at))::float8
            FROM \(DeadLetterStore.letters) WHERE status IN ('waiting', 'replaying') GROUP BY failed_queue
            """)
        var perQueue: [String: Int] = [:]
        var oldest = 0.0
        for row in rows {
            perQueue[try row.decode(String.self, 0)] = try row.decode(Int.self, 1)
            oldest = max(oldest, try row.decode(Double.self, 2))
        }
        return (perQueue, oldest)
    }
}

/// Sends letters back and discards them.
public struct DeadLetterOperator: Sendable {
    public let database: PostgresClient
    public init(database: PostgresClient) { self.database = database }

    public enum ReplayOutcome: Sendable, Equatable {
        case replayed(queue: String)
        /// Not waiting any more (replayed or discarded meanwhile), or another replay holds it.
        case skipped(String)
    }

    /// Publishes one letter back to the queue it failed on (with the same message id, so a
    /// message that did get handled is not handled twice) and marks it replayed; the row stays
    /// locked until the broker confirmed the publish. `again` replays a letter replayed before.
    public func replay(_ id: String, on channel: AMQPChannel, again: Bool = false) async throws -> ReplayOutcome {
        try await database.transaction { tx in
            let rows = try await tx.query("""
                SELECT failed_queue, properties::text, headers::text, body, status FROM \(DeadLetterStore.letters)
                WHERE id = $1 FOR UPDATE SKIP LOCKED
                """, [id])
            guard rows.count == 1 else {
                let exists = try await tx.query("SELECT 1 FROM \(DeadLetterStore.letters) WHERE id = $1", [id])
                return .skipped(exists.count == 0 ? "no such letter" : "another replay is sending it")
            }
            let row = rows[0]
            let status = try row.decode(String.self, 4)
            guard status == "waiting" || status == "replaying" || again && status == "replayed" else {
                return .skipped("already \(status)" + (status == "replayed" ? " (--again replays it once more)" : ""))
            }
            let queue = try row.decode(String.self, 0)
            let properties = try JSONDecoder().decode([String: JSONValue].self, from: Data(try row.decode(String.self, 1).utf8))
            let headers = try JSONDecoder().decode([String: JSONValue].self, from: Data(try row.decode(String.self, 2).utf8))
            let body = Array(try row.decode(Data.self, 3))
            try await channel.publish(body, exchange: "", routingKey: queue,
                                      properties: ReplayMessage.properties(letterID: id, properties: properties, headers: headers),
                                      mandatory: true)
            try await tx.query("""
                UPDATE \(DeadLetterStore.letters)
                SET status = 'replayed', replays = replays + 1, status_changed_at = now(), status_note = $2, replay_request = NULL
                WHERE id = $1
                """, [id, "replayed to \(queue)"])
            try await tx.query("""
                INSERT INTO \(DeadLetterStore.history) (letter_id, at, kind, detail) VALUES ($1, now(), 'replayed', $2)
                """, [id, "sent back to \(queue)"])
            return .replayed(queue: queue)
        }
    }

    /// Marks letters discarded, with the reason; they stay in the store for the record. Returns
    /// the ids that were discarded (those not already).
    public func discard(_ ids: [String], reason: String) async throws -> [String] {
        try await database.transaction { tx in try await Self.discard(ids, reason: reason, on: tx) }
    }

    /// ``discard(_:reason:)`` inside the caller's transaction. `statuses`: only letters in these
    /// (checked under each letter's lock, so one replayed meanwhile is left alone); nil: any but
    /// discarded.
    public static func discard(_ ids: [String], reason: String, statuses: [String]? = nil,
                               on tx: PostgresConnection) async throws -> [String] {
        let allowed = statuses ?? DeadLetter.statuses.filter { $0 != "discarded" }
        let rows = try await tx.query("""
            UPDATE \(DeadLetterStore.letters) SET status = 'discarded', status_changed_at = now(), status_note = $2, replay_request = NULL
            WHERE id = ANY($1) AND status <> 'discarded' AND status = ANY($3) RETURNING id
            """, [ids, reason, allowed])
        let discarded = try rows.map { try $0.decode(String.self, 0) }
        if !discarded.isEmpty {
            try await tx.query("""
                INSERT INTO \(DeadLetterStore.history) (letter_id, at, kind, detail)
                SELECT id, now(), 'discarded', $2 FROM unnest($1::text[]) AS id
                """, [discarded, reason])
        }
        return discarded
    }

    /// Schedules a replay of the letters, inside the caller's transaction: a replay request
    /// `request` at `rate` letters a second, and each waiting letter (or, with `again`, replayed
    /// one) `replaying` in it, in the order given; the dead-letter worker's replay job sends them
    /// (``replayDue(on:)``). Returns the ids scheduled.
    public static func requestReplay(_ ids: [String], rate: Double, again: Bool, requestedBy: String, request: String,
                                     on tx: PostgresConnection) async throws -> [String] {
        try await tx.query("""
            INSERT INTO \(DeadLetterStore.replayRequests) (id, interval_seconds, next_at, requested_by)
            VALUES ($1, 1.0 / $2::float8, now(), $3) ON CONFLICT (id) DO NOTHING
            """, [request, rate, requestedBy])
        let rows = try await tx.query("""
            UPDATE \(DeadLetterStore.letters) AS l
            SET status = 'replaying', status_changed_at = now(), status_note = $2, replay_request = $4, replay_order = chosen.n
            FROM (SELECT c.id, row_number() OVER (ORDER BY s.n) AS n
                  FROM \(DeadLetterStore.letters) AS c JOIN unnest($1::text[]) WITH ORDINALITY AS s(id, n) ON c.id = s.id
                  WHERE c.status = 'waiting' OR ($3 AND c.status = 'replayed')) AS chosen
            WHERE l.id = chosen.id AND (l.status = 'waiting' OR ($3 AND l.status = 'replayed'))
            RETURNING l.id
            """, [ids, "replay requested by \(requestedBy) at \(rate)/s", again, request])
        let scheduled = try rows.map { try $0.decode(String.self, 0) }
        if scheduled.isEmpty {
            try await tx.query("DELETE FROM \(DeadLetterStore.replayRequests) WHERE id = $1", [request])
        } else {
            try await tx.query("""
                INSERT INTO \(DeadLetterStore.history) (letter_id, at, kind, detail)
                SELECT id, now(), 'replay-requested', $2 FROM unnest($1::text[]) AS id
                """, [scheduled, "replay requested by \(requestedBy) at \(rate) letters/s"])
        }
        return scheduled
    }

    /// Whether a replay request may send now (a cheap look before opening a connection).
    public func anyDue() async throws -> Bool {
        try await database.query("SELECT 1 FROM \(DeadLetterStore.replayRequests) WHERE next_at <= now() LIMIT 1").count > 0
    }

    /// Sends what the replay requests may send now, each letter as ``replay(_:on:again:)`` does.
    /// One statement claims every request whose time has come (`SKIP LOCKED`: replicas share
    /// them) and moves its next time on by what it sends now: the letters owed since then, but at
    /// most a tenth of a second's worth at its rate, so a job kept from running (a restart, the
    /// broker away) never catches up in a burst. A letter that cannot be sent stays `replaying`
    /// with the error as its note and its request waits `retryAfter`. Returns how many were sent.
    public func replayDue(on channel: AMQPChannel, retryAfter: Duration = .seconds(5)) async throws -> Int {
        let claimed = try await database.query("""
            UPDATE \(DeadLetterStore.replayRequests) AS r SET next_at = now() + make_interval(secs => r.interval_seconds * q.quota)
            FROM (SELECT id, least(floor(extract(epoch FROM now() - next_at) / interval_seconds)::bigint + 1,
                                   greatest(1, ceil(0.1 / interval_seconds)::bigint)) AS quota
                  FROM \(DeadLetterStore.replayRequests) WHERE next_at <= now() ORDER BY next_at FOR UPDATE SKIP LOCKED) AS q
            WHERE r.id = q.id
            RETURNING r.id, q.quota
            """)
        var sent = 0
        for index in 0..<claimed.count {
            let request = try claimed[index].decode(String.self, 0)
            let quota = try claimed[index].decode(Int.self, 1)
            let letters = try await database.query("""
                SELECT id FROM \(DeadLetterStore.letters) WHERE replay_request = $1 AND status = 'replaying'
                ORDER BY replay_order, id LIMIT $2
                """, [request, quota])
            for row in 0..<letters.count {
                let id = try letters[row].decode(String.self, 0)
                do {
                    if case .replayed = try await replay(id, on: channel) { sent += 1 }
                } catch let error as PostgresError {
                    throw error
                } catch {
                    try await database.query(
                        "UPDATE \(DeadLetterStore.replayRequests) SET next_at = now() + make_interval(secs => $2) WHERE id = $1",
                        [request, retryAfter.seconds])
                    try await database.query("UPDATE \(DeadLetterStore.letters) SET status_note = $2 WHERE id = $1 AND status = 'replaying'",
                                             [id, "replay failed, trying again: \(error)"])
                    throw error
                }
            }
            if letters.count < quota {
                try await database.query("""
                    DELETE FROM \(DeadLetterStore.replayRequests) AS r WHERE r.id = $1
                    AND NOT EXISTS (SELECT 1 FROM \(DeadLetterStore.letters) WHERE replay_request = r.id AND status = 'replaying')
                    """, [request])
            }
        }
        return sent
    }
}
