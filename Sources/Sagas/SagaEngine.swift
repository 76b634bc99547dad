public import FoundationEssentials
public import Messaging
import Logging
import Metrics
public import PostgresClient
import Synchronization

/// What one transition did to a saga.
public struct SagaChange<Definition: SagaDefinition>: Sendable {
    public var sagaID: String
    public var before: Definition.State
    public var after: Definition.State
    public var data: Definition.Data
    public var ignoredBecause: String?
    public var moved: Bool { ignoredBecause == nil }
}

/// Runs a ``SagaDefinition`` against its tables, inside the transaction of the handler (or job)
/// that got the input: the saga row is locked, the transition decided, the new state, the step
/// log, the pending timeout and the outgoing messages (outbox rows) all commit together with the
/// handler's inbox row. A redelivered input therefore never moves a saga twice.
public struct SagaEngine<Definition: SagaDefinition>: Sendable {
    public let definition: Definition
    public let schema: String
    /// Called, in the same transaction, after every transition that was not ignored: the hosting
    /// domain keeps its own tables (an order's status) in step with the saga.
    private let didMove: @Sendable (SagaChange<Definition>, HandlerContext) async throws -> Void

    private let table: String
    private let rowStatements: RowStatements
    private let stepStatements: StepStatements

    public init(_ definition: Definition, schema: String,
                didMove: @escaping @Sendable (SagaChange<Definition>, HandlerContext) async throws -> Void = { _, _ in }) {
        self.definition = definition
        self.schema = schema
        self.didMove = didMove
        table = quoteIdentifier(schema)
        rowStatements = RowStatements(table: table)
        stepStatements = StepStatements(table: table)
    }

    /// Saga rows locked and read for a batch of inputs, each handed to the first
    /// ``handle(_:sagaID:note:in:)`` of the batch for its saga (it finds them in the handler
    /// context's `batchPrepared`). An input after the first for the same saga reads the row
    /// again, under the lock its transaction already holds, and so sees what the first wrote.
    public final class LockedRows: Sendable {
        private let rows: Mutex<[String: Loaded]>
        /// Rows taken. Made here, once per batch, rather than at start-up: an engine is built
        /// before the process bootstraps its metrics.
        private let taken = Counter(label: "shopfleet_saga_rows_read_ahead_total", dimensions: [("saga", Definition.name)])

        fileprivate init(_ rows: [String: Loaded]) { self.rows = Mutex(rows) }

        fileprivate func take(_ id: String) -> Loaded? {
            guard let row = rows.withLock({ $0.removeValue(forKey: id) }) else { return nil }
            taken.increment()
            return row
        }
    }

    /// Locks the rows of the sagas `ids` names (those that exist), in id order, and reads them:
    /// for a batch's `beforeBatch`, so that the batch takes its saga locks in one order (two
    /// batches wait for each other instead of deadlocking) and in one round trip, instead of one
    /// per input. A row that cannot be read (a state this definition does not know, data it
    /// cannot decode) is left out: its input reads it and fails as it would alone.
    public func lockAll(_ ids: some Sequence<String>, on database: PostgresConnection) async throws -> LockedRows {
        let unique = Array(Set(ids))
        if unique.isEmpty { return LockedRows([:]) }
        let rows = try await database.query("""
            SELECT id, \(Self.rowColumns) FROM \(table).sagas WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
            """, [unique])
        var loaded: [String: Loaded] = [:]
        for index in 0..<rows.count {
            let id = try rows[index].decode(String.self, 0)
            if let saga = try? Self.read(rows[index], id: id, from: 1) { loaded[id] = saga }
        }
        return LockedRows(loaded)
    }

    /// Creates saga `id` and runs its first input. Nil when saga `id` exists already (the start
    /// was handled before).
    @discardableResult
    public func start(id: String, data: Definition.Data, input: Definition.Input, in context: HandlerContext) async throws -> SagaChange<Definition>? {
        let initial = Definition.initialState
        let inserted = try await context.database.query("""
            INSERT INTO \(table).sagas (id, saga_type, state, data, labels) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (id) DO NOTHING RETURNING 1
            """, [id, Definition.name, initial.rawValue, PostgresJSON(data), PostgresJSON(definition.labels(of: data))])
        if inserted.count == 0 { return nil }
        return try await apply(input, to: Loaded(id: id, state: initial, data: data, timeout: nil), in: context, starting: true)
    }

    /// Runs `input` against saga `sagaID`. Nil when there is no such saga. `note` goes into the
    /// step log with the input (who asked for it and why, for an operator's input).
    @discardableResult
    public func handle(_ input: Definition.Input, sagaID: String, note: String? = nil,
                       in context: HandlerContext) async throws -> SagaChange<Definition>? {
        var loaded = (context.batchPrepared as? LockedRows)?.take(sagaID)
        if loaded == nil { loaded = try await lock(sagaID, skipLocked: false, on: context) }
        guard let loaded else { return nil }
        return try await apply(input, to: loaded, in: context, note: note)
    }

    /// Fires the timeouts that are due, each in a transaction of its own. Any replica may run
    /// this: a saga another replica is working on is skipped (`SKIP LOCKED`) and a timeout already
    /// fired, or replaced since, is not due any more. Timeouts are in the saga row; a replica of a
    /// version before (during a rolling upgrade, or after a rollback and a new upgrade) writes
    /// them to `saga_timeouts`, and those fire too, each deleted as it fires. A saga whose timeout
    /// fails (its row cannot be read, a bug) is logged and its timeout pushed back by
    /// `postponeOnFailure`; the others fire. Returns how many fired.
    public func fireDueTimeouts(_ job: JobContext, limit: Int = 100, postponeOnFailure: Duration = .seconds(30)) async throws -> Int {
        let postpone = postponeOnFailure.components.seconds
        let inRows = try await fire(
            job, due: "SELECT id FROM \(table).sagas WHERE timeout_due_at <= now() ORDER BY timeout_due_at LIMIT $1", limit: limit,
            postpone: "UPDATE \(table).sagas SET timeout_due_at = now() + make_interval(secs => $2) WHERE id = $1 AND timeout_due_at IS NOT NULL",
            by: postpone
        ) { saga, _ in
            // Still due under the saga row's lock: a handler may have moved the saga meanwhile.
            guard let timeout = saga.timeout, timeout.due else { return nil }
            return timeout.name
        }
        let inTable = try await fire(
            job, due: "SELECT saga_id FROM \(table).saga_timeouts WHERE due_at <= now() ORDER BY due_at LIMIT $1", limit: limit,
            postpone: "UPDATE \(table).saga_timeouts SET due_at = now() + make_interval(secs => $2) WHERE saga_id = $1",
            by: postpone
        ) { [table] saga, context in
            let rows = try await context.database.query(
                "DELETE FROM \(table).saga_timeouts WHERE saga_id = $1 AND due_at <= now() RETURNING name", [saga.id])
            return rows.count == 1 ? try rows[0].decode(String.self, 0) : nil
        }
        return inRows + inTable
    }

    /// Fires the timeouts of the sagas `due` selects (`$1` the limit), each in an isolated
    /// transaction that locks the saga row and asks `timeout` which one is still due (nil: none).
    /// A failure runs `postpone` (`$1` the saga, `$2` the seconds) in a transaction of its own.
    private func fire(_ job: JobContext, due: String, limit: Int, postpone: String, by seconds: Int64,
                      timeout: @escaping @Sendable (Loaded, HandlerContext) async throws -> String?) async throws -> Int {
        let rows = try await job.database.query(due, [limit])
        var fired = 0
        for index in 0..<rows.count {
            let sagaID = try rows[index].decode(String.self, 0)
            let didFire = try await job.isolated("the timeout of saga \(sagaID)", sagaID: sagaID, postpone: { database in
                try await database.query(postpone, [sagaID, seconds])
            }) { context -> Bool in
                guard let saga = try await lock(sagaID, skipLocked: true, on: context),
                      let name = try await timeout(saga, context) else { return false }
                try await apply(.timeout(name), to: saga, in: context)
                return true
            }
            if didFire == true { fired += 1 }
        }
        return fired
    }

    // MARK: - Internals

    fileprivate struct Loaded {
        var id: String
        var state: Definition.State
        var data: Definition.Data
        /// The pending timeout, and whether it is due.
        var timeout: (name: String, due: Bool)?
    }

    /// Locks the saga row and reads it, with its pending timeout.
    private func lock(_ id: String, skipLocked: Bool, on context: HandlerContext) async throws -> Loaded? {
        let rows = try await context.database.query("""
            SELECT \(Self.rowColumns) FROM \(table).sagas WHERE id = $1 FOR UPDATE\(skipLocked ? " SKIP LOCKED" : "")
            """, [id])
        guard rows.count == 1 else { return nil }
        return try Self.read(rows[0], id: id, from: 0)
    }

    /// What ``read(_:id:from:)`` reads of a saga row.
    private static var rowColumns: String { "state, data::text, timeout_name, timeout_due_at <= now()" }

    /// A saga row's state, data, timeout name and whether it is due (``rowColumns``), in columns
    /// `first` on.
    private static func read(_ row: PostgresRow, id: String, from first: Int) throws -> Loaded {
        let stateName = try row.decode(String.self, first)
        guard let state = Definition.State(rawValue: stateName) else {
            throw PermanentFailure("saga-state", "saga \(id) is in state '\(stateName)', which \(Definition.name) does not know")
        }
        let data = try JSONDecoder().decode(Definition.Data.self, from: Data(try row.decode(String.self, first + 1).utf8))
        let timeout = try row.decode(String?.self, first + 2).map { (name: $0, due: try row.decode(Bool.self, first + 3)) }
        return Loaded(id: id, state: state, data: data, timeout: timeout)
    }

    @discardableResult
    private func apply(_ input: Definition.Input, to saga: Loaded, in context: HandlerContext,
                       starting: Bool = false, note: String? = nil) async throws -> SagaChange<Definition> {
        let transition = definition.transition(from: saga.state, data: saga.data, on: input, now: Date())
        var steps = StepLog()
        let kind: SagaStep.Kind = starting ? .started
            : transition.ignoredBecause != nil ? .ignored : input.timeoutName != nil ? .timeout : .received
        // A fired timeout has no message of its own; the job's envelope would mislead.
        let cause = input.timeoutName == nil ? context.envelope : nil
        steps.add(kind, name: input.name, envelope: cause, before: saga.state.rawValue, after: transition.state.rawValue,
                  detail: [transition.ignoredBecause, note].compactMap { $0 }.joined(separator: "; ").nonEmpty)
        // A saga has one pending timeout: one the transition schedules replaces it.
        var scheduled: (name: String, seconds: Double)?
        for action in transition.actions {
            switch action {
            case .send(let command):
                let id = try await context.send(command, sagaID: saga.id)
                steps.add(.sent, name: type(of: command).type, messageID: id)
            case .publish(let event):
                let id = try await context.publish(event, sagaID: saga.id)
                steps.add(.published, name: type(of: event).type, messageID: id)
            case .schedule(let name, let after):
                scheduled = (name, Double(after.components.seconds) + Double(after.components.attoseconds) / 1e18)
                steps.add(.scheduled, name: name, detail: "due in \(after)")
            }
        }
        // One statement for the saga row: its state and data when it moved, and its timeout — the
        // one scheduled, or none when it moved without scheduling one or the input was its
        // timeout (fired, so gone). An input ignored that touches neither leaves the row alone.
        if transition.ignoredBecause == nil {
            let terminal = Definition.terminalStates.contains(transition.state)
            var binds: [any PostgresEncodable] = [saga.id, transition.state.rawValue, PostgresJSON(transition.data), terminal,
                                                  scheduled?.name, scheduled?.seconds]
            // The labels (what operators filter on) are written when they change, which most
            // transitions' do not: one JSON encoding fewer per input. (A definition that adds a
            // label key needs a migration to backfill it: sagas already stored keep their labels.)
            let labels = definition.labels(of: transition.data)
            if labels != definition.labels(of: saga.data) {
                binds.append(PostgresJSON(labels))
                try context.write(rowStatements.movedWithLabels, binds)
            } else {
                try context.write(rowStatements.moved, binds)
            }
        } else if scheduled != nil || input.timeoutName != nil {
            try context.write(rowStatements.ignoredSettingTimeout, [saga.id, scheduled?.name, scheduled?.seconds])
        }
        try steps.write(saga: saga.id, statements: stepStatements, on: context)
        let change = SagaChange<Definition>(sagaID: saga.id, before: saga.state, after: transition.state, data: transition.data,
                                            ignoredBecause: transition.ignoredBecause)
        if change.moved {
            try await didMove(change, context)
        } else {
            context.logger.info("saga input ignored", metadata: ["saga_id": .string(saga.id), "input": .string(input.name),
                                                               "state": .string(saga.state.rawValue),
                                                               "reason": .string(transition.ignoredBecause ?? "")])
        }
        return change
    }

    /// The steps one input adds to the log, written with one statement that numbers them after
    /// the last (the saga row is locked, so nobody else is numbering; the last is one probe of the
    /// log's primary key). Each step is a row of `VALUES` with parameters of its own (a statement
    /// per number of steps, prepared once per connection): no array literals to build and escape.
    private struct StepLog {
        var binds: [any PostgresEncodable] = []
        var count = 0

        mutating func add(_ kind: SagaStep.Kind, name: String, envelope: Envelope? = nil, messageID: String? = nil,
                          before: String? = nil, after: String? = nil, detail: String? = nil) {
            let type: String? = kind == .sent || kind == .published ? name : envelope?.type
            let id: String? = messageID ?? envelope?.messageID
            count += 1
            binds += [kind.rawValue, name, type, id, before, after, detail] as [any PostgresEncodable]
        }

        func write(saga id: String, statements: StepStatements, on context: HandlerContext) throws {
            try context.write(statements.inserting(count), [id] + binds)
        }
    }

    /// What an input writes to the saga row, built once per engine.
    struct RowStatements: Sendable {
        /// $1 id, $2 state, $3 data, $4 terminal, $5 timeout name, $6 its delay in seconds (both NULL: none).
        let moved: String
        /// The same, and $7 the labels.
        let movedWithLabels: String
        /// An input ignored that scheduled a timeout, or was the timeout: $1 id, $2 and $3 as $5 and $6 above.
        let ignoredSettingTimeout: String

        init(table: String) {
            let moving = """
                UPDATE \(table).sagas SET state = $2, data = $3, terminal = $4, timeout_name = $5,
                    timeout_due_at = now() + make_interval(secs => $6), updated_at = now()
                """
            moved = moving + " WHERE id = $1"
            movedWithLabels = moving + ", labels = $7 WHERE id = $1"
            ignoredSettingTimeout = """
                UPDATE \(table).sagas SET timeout_name = $2, timeout_due_at = now() + make_interval(secs => $3) WHERE id = $1
                """
        }
    }

    /// The step log's statement for each number of steps, built once per engine (an input adds
    /// one to five steps; more are built when needed).
    struct StepStatements: Sendable {
        let table: String
        private let built: [String]

        init(table: String, upTo most: Int = 8) {
            self.table = table
            built = (1...most).map { Self.build(table: table, count: $0) }
        }

        /// For `count` steps, one or more (every input logs at least the input itself).
        func inserting(_ count: Int) -> String {
            precondition(count >= 1, "a saga input logs at least one step")
            return count <= built.count ? built[count - 1] : Self.build(table: table, count: count)
        }

        private static func build(table: String, count: Int) -> String {
            let rows = (0..<count).map { row in
                let first = 2 + row * 7
                return "(\(row + 1), " + (first..<first + 7).map { "$\($0)::text" }.joined(separator: ", ") + ")"
            }
            return """
                INSERT INTO \(table).saga_steps (saga_id, seq, kind, name, message_type, message_id, state_before, state_after, detail)
                SELECT $1, last.seq + step.n, step.kind, step.name, step.type, step.id, step.before, step.after, step.detail
                FROM (SELECT coalesce(max(seq), 0) AS seq FROM \(table).saga_steps WHERE saga_id = $1) AS last,
                     (VALUES \(rows.joined(separator: ", "))) AS step(n, kind, name, type, id, before, after, detail)
                ORDER BY step.n
                """
        }
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
