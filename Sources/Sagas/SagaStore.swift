public import FoundationEssentials
public import PostgresClient

/// The saga tables in a service's schema: one row per saga (with its pending timeout, since
/// ``timeoutsInTheSagaRow(version:)``; `saga_timeouts` only for replicas of the version before)
/// and its step log.
public enum SagaTables {
    /// The tables, as a migration of the hosting service (`version` is the service's to choose).
    public static func migration(version: Int) -> Migration {
        Migration(version: version, name: "sagas", sql: """
            CREATE TABLE sagas (
                id text PRIMARY KEY,
                saga_type text NOT NULL,
                state text NOT NULL,
                terminal boolean NOT NULL DEFAULT false,
                data jsonb NOT NULL,
                labels jsonb NOT NULL DEFAULT '{}',
                started_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX sagas_open ON sagas (updated_at) WHERE NOT terminal;
            CREATE INDEX sagas_state ON sagas (state, updated_at);

            CREATE TABLE saga_steps (
                saga_id text NOT NULL REFERENCES sagas (id),
                seq integer NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(),
                kind text NOT NULL,
                name text NOT NULL,
                message_type text,
                message_id text,
                state_before text,
                state_after text,
                detail text,
                PRIMARY KEY (saga_id, seq)
            );

            CREATE TABLE saga_timeouts (
                saga_id text PRIMARY KEY REFERENCES sagas (id),
                name text NOT NULL,
                due_at timestamptz NOT NULL,
                scheduled_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX saga_timeouts_due ON saga_timeouts (due_at);
            """)
    }
}

extension SagaTables {
    /// Drops the foreign keys of the step log and the pending timeout: every step and timeout is
    /// written by the engine under the saga row's lock, in the transaction that read the row, and
    /// no saga row is ever deleted, so the checks (one per row written, about twenty per order)
    /// guarded nothing.
    public static func withoutForeignKeys(version: Int) -> Migration {
        Migration(version: version, name: "sagas-without-foreign-keys", sql: """
            ALTER TABLE saga_steps DROP CONSTRAINT IF EXISTS saga_steps_saga_id_fkey;
            ALTER TABLE saga_timeouts DROP CONSTRAINT IF EXISTS saga_timeouts_saga_id_fkey;
            """)
    }
}

extension SagaTables {
    /// Keeps the pending timeout in the saga row (`timeout_name`, `timeout_due_at`, with a
    /// partial index on the due ones) instead of a row of `saga_timeouts` that every transition
    /// upserted or deleted: an input then writes the saga row (state, data and timeout in one
    /// statement), its steps and its outbox rows. Pending timeouts move into their saga's row.
    ///
    /// `saga_timeouts` stays, empty, for the version before: its replicas (during a rolling
    /// upgrade, or after a rollback) go on writing timeouts there, and this version fires those
    /// too (``SagaEngine/fireDueTimeouts(_:limit:postponeOnFailure:)``). A rollback leaves the
    /// timeouts this version wrote in the rows, where the version before does not look; the
    /// statement that hands them back is in docs/kubernetes.md ("Roll back").
    ///
    /// The `ALTER TABLE` holds the sagas table's lock until the migration commits, through the
    /// index build (a scan of every saga stored): saga inputs wait meanwhile, and none fails. On a
    /// table of millions of sagas that is long enough to plan for.
    public static func timeoutsInTheSagaRow(version: Int) -> Migration {
        Migration(version: version, name: "sagas-timeout-in-the-row", sql: """
            ALTER TABLE sagas ADD COLUMN timeout_name text, ADD COLUMN timeout_due_at timestamptz;
            UPDATE sagas SET timeout_name = t.name, timeout_due_at = t.due_at FROM saga_timeouts t WHERE t.saga_id = sagas.id;
            DELETE FROM saga_timeouts;
            CREATE INDEX sagas_timeout_due ON sagas (timeout_due_at) WHERE timeout_due_at IS NOT NULL;
            """)
    }
}

/// One saga as stored.
public struct SagaRecord: Sendable, Equatable {
    public var id: String
    public var type: String
    public var state: String
    public var terminal: Bool
    /// The definition's data, as JSON.
    public var data: String
    public var labels: [String: String]
    public var startedAt: Date
    public var updatedAt: Date
}

/// One line of a saga's timeline.
public struct SagaStep: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        /// The saga began.
        case started
        /// An input arrived and moved the saga (or was ignored: see `detail`).
        case received
        case ignored
        case timeout
        /// A command sent or an event published by the saga.
        case sent
        case published
        case scheduled
    }
    public var seq: Int
    public var at: Date
    public var kind: Kind
    public var name: String
    public var messageType: String?
    public var messageID: String?
    public var stateBefore: String?
    public var stateAfter: String?
    public var detail: String?
}

/// Reads sagas for operators (`shopfleet saga`); the engine writes them.
public struct SagaReader: Sendable {
    public let schema: String
    public init(schema: String) { self.schema = schema }

    var table: String { quoteIdentifier(schema) }

    static let columns = "id, saga_type, state, terminal, data::text, labels::text, started_at, updated_at"

    static func record(_ row: PostgresRow) throws -> SagaRecord {
        let labels = try JSONDecoder().decode([String: String].self, from: Data(try row.decode(String.self, 5).utf8))
        return SagaRecord(id: try row.decode(String.self, 0), type: try row.decode(String.self, 1), state: try row.decode(String.self, 2),
                          terminal: try row.decode(Bool.self, 3), data: try row.decode(String.self, 4), labels: labels,
                          startedAt: try row.decode(Date.self, 6), updatedAt: try row.decode(Date.self, 7))
    }

    public func saga(_ id: String, on database: PostgresClient) async throws -> SagaRecord? {
        let rows = try await database.query("SELECT \(Self.columns) FROM \(table).sagas WHERE id = $1", [id])
        return rows.count == 0 ? nil : try Self.record(rows[0])
    }

    public struct Filter: Sendable {
        public var states: [String] = []
        /// Only sagas not updated for at least this long.
        public var olderThan: Duration?
        public var label: (key: String, value: String)?
        public var openOnly = false
        /// The sagas that moved longest ago first (stuck ones), instead of the newest first.
        public var leastRecentlyMovedFirst = false
        public var limit = 100
        public init() {}
    }

    public func sagas(_ filter: Filter, on database: PostgresClient) async throws -> [SagaRecord] {
        var conditions: [String] = []
        var binds: [any PostgresEncodable] = []
        if !filter.states.isEmpty {
            binds.append(filter.states)
            conditions.append("state = ANY($\(binds.count))")
        }
        if let olderThan = filter.olderThan {
            binds.append(Double(olderThan.components.seconds) + Double(olderThan.components.attoseconds) / 1e18)
            conditions.append("updated_at < now() - make_interval(secs => $\(binds.count))")
        }
        if let label = filter.label {
            binds.append(label.key)
            binds.append(label.value)
            conditions.append("labels ->> $\(binds.count - 1) = $\(binds.count)")
        }
        if filter.openOnly { conditions.append("NOT terminal") }
        binds.append(filter.limit)
        let sql = "SELECT \(Self.columns) FROM \(table).sagas"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + (filter.leastRecentlyMovedFirst ? " ORDER BY updated_at, id" : " ORDER BY started_at DESC, id DESC") + " LIMIT $\(binds.count)"
        let rows = try await database.query(sql, binds)
        return try (0..<rows.count).map { try Self.record(rows[$0]) }
    }

    public func steps(of id: String, on database: PostgresClient) async throws -> [SagaStep] {
        let rows = try await database.query("""
            SELECT seq, at, kind, name, message_type, message_id, state_before, state_after, detail
            FROM \(table).saga_steps WHERE saga_id = $1 ORDER BY seq
            """, [id])
        return try (0..<rows.count).map { index in
            let row = rows[index]
            return SagaStep(seq: try row.decode(Int.self, 0), at: try row.decode(Date.self, 1),
                            kind: SagaStep.Kind(rawValue: try row.decode(String.self, 2)) ?? .received,
                            name: try row.decode(String.self, 3), messageType: try row.decode(String?.self, 4),
                            messageID: try row.decode(String?.self, 5), stateBefore: try row.decode(String?.self, 6),
                            stateAfter: try row.decode(String?.self, 7), detail: try row.decode(String?.self, 8))
        }
    }

    /// The pending timeout: its name and when it is due (the first due, if a replica of the
    /// version before left one in `saga_timeouts` as well).
    public func pendingTimeout(of id: String, on database: PostgresClient) async throws -> (name: String, dueAt: Date)? {
        let rows = try await database.query("""
            SELECT timeout_name, timeout_due_at FROM \(table).sagas WHERE id = $1 AND timeout_due_at IS NOT NULL
            UNION ALL SELECT name, due_at FROM \(table).saga_timeouts WHERE saga_id = $1
            ORDER BY 2 LIMIT 1
            """, [id])
        return rows.count == 0 ? nil : (try rows[0].decode(String.self, 0), try rows[0].decode(Date.self, 1))
    }
}
