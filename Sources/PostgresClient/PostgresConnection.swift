public import ClientRuntime
import CLibPQ
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection, owned by a thread of its own. Every libpq call happens on that thread;
/// callers `await` the result.
public final class PostgresConnection: PooledConnection, @unchecked Sendable {
    public let configuration: PostgresConfiguration
    private let thread: ConnectionThread
    private let logger: Logger
    /// Touched only on `thread`.
    private var conn: OpaquePointer?
    private let usable = Atomic<Bool>(false)
    /// The open transaction, if any: what waits to go with its next round trip (its BEGIN first,
    /// then statements from ``sendWithNext(_:)``), whether BEGIN went out, whether it committed.
    private let transactionState = Mutex(TransactionState())
    /// Statement text → the name it is prepared under on this server connection. Touched only on
    /// `thread`; it dies with the connection (a reconnect is a new ``PostgresConnection``).
    private var prepared: [String: String] = [:]
    private var preparedNames = 0

    private init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.thread = ConnectionThread(name: "postgres \(configuration.host):\(configuration.port)")
    }

    /// Opens a connection; fails with `.connectionFailed` (naming host and port) or
    /// `.authenticationFailed` within the configured connect timeout.
    public static func connect(
        _ configuration: PostgresConfiguration,
        logger: Logger = Logger(label: "shopfleet.postgres")
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(configuration: configuration, logger: logger)
        do {
            try await connection.thread.submit { try connection.open() }
        } catch {
            connection.thread.stop()
            throw error
        }
        return connection
    }

    /// The connection's own thread as a task executor: code run under
    /// `withTaskExecutorPreference(connection.executor)` calls this connection without a handover
    /// between threads. Keep such code short and non-blocking: the connection is serviced there too.
    public var executor: any TaskExecutor { thread }

    public var isUsable: Bool { usable.load(ordering: .acquiring) }

    public func close() async {
        _ = try? await thread.submit { self.finish() }
        thread.stop()
    }

    /// Runs one statement with `$1…$n` parameters and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ binds: [any PostgresEncodable] = []) async throws -> PostgresRows {
        let texts = binds.map(\.postgresText)
        return try await thread.submit { try self.run(sql, texts) }
    }

    @discardableResult
    public func query(_ sql: String, _ binds: any PostgresEncodable...) async throws -> PostgresRows {
        try await query(sql, binds)
    }

    /// Runs one or more statements with the simple protocol (no parameters): for migrations and DDL.
    public func simpleQuery(_ sql: String) async throws {
        try await thread.submit { try self.runSimple(sql) }
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws (the error is
    /// rethrown). A failed COMMIT throws as well. The body may end the transaction itself with
    /// ``commit(after:)``, which sends its last statements and the COMMIT in one round trip.
    ///
    /// The connection belongs to the transaction until it ends, so the body runs on the
    /// connection's own thread (task executor preference): its statements run inline, with no
    /// handover between threads. Code isolated to an actor still runs on that actor.
    public func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withTaskExecutorPreference(thread) {
            transactionState.withLock { $0 = TransactionState(open: true, queued: [QueuedStatement(Self.begin)]) }
            defer { transactionState.withLock { $0 = TransactionState() } }
            let result: T
            do {
                result = try await body(self)
            } catch {
                // Nothing to roll back if BEGIN never went out, or if the body committed.
                let (begun, committed) = transactionState.withLock { state in
                    defer { state.queued.removeAll() }
                    return (state.begun, state.committed)
                }
                if begun, !committed, isUsable {
                    do { try await simpleQuery("ROLLBACK") } catch {
                        logger.warning("rollback failed", metadata: ["error": "\(error)"])
                    }
                }
                throw error
            }
            if !transactionState.withLock({ $0.committed }) {
                try await commit(after: [])
            }
            return result
        }
    }

    /// Ends the transaction ``transaction(_:)`` opened: runs `statements`, then COMMIT, sent
    /// together in one round trip (libpq pipeline mode), and returns the statements' rows. Call it
    /// last in the body; a statement after it is an error. If a statement fails, nothing commits:
    /// the error is thrown and `transaction` rolls back. A transaction that sent nothing commits
    /// nothing.
    @discardableResult
    public func commit(after statements: [PostgresStatement]) async throws -> [PostgresRows] {
        try await thread.submit { try self.runCommit(statements) }
    }

    /// Sends `statement` in the transaction's next round trip, ahead of its next statement (or of
    /// its COMMIT), instead of in a round trip of its own; the result is in the returned
    /// ``PostgresPendingResult`` once that round trip is done. If the statement fails, the
    /// statement it went with throws its error and the transaction is aborted. Only inside
    /// ``transaction(_:)``.
    public func sendWithNext(_ statement: PostgresStatement) throws -> PostgresPendingResult {
        let pending = PostgresPendingResult()
        let queued = transactionState.withLock { state -> Bool in
            guard state.open, !state.committed else { return false }
            state.queued.append(QueuedStatement(PipelinedStatement(sql: statement.sql, binds: statement.binds, prepare: true), pending))
            return true
        }
        guard queued else {
            throw PostgresError(.usage, "sendWithNext is only for a transaction that is open", host: configuration.host,
                                port: configuration.port, query: statement.sql)
        }
        return pending
    }

    private static let begin = PipelinedStatement(sql: "BEGIN", binds: [], prepare: false)
    private static let commit = PipelinedStatement(sql: "COMMIT", binds: [], prepare: false)

    /// Takes what waits to go with the next round trip; refuses a statement after the commit.
    private func takeQueued(before sql: String) throws -> [QueuedStatement] {
        let (queued, committed) = transactionState.withLock { state in
            defer { state.queued.removeAll() }
            return (state.queued, state.committed)
        }
        if committed {
            // It would run outside the transaction.
            throw PostgresError(.usage, "the transaction was already committed by commit(after:); this statement would run outside it",
                                host: configuration.host, port: configuration.port, query: sql)
        }
        return queued
    }

    /// Sends a notification (`pg_notify`, so the channel name needs no quoting).
    public func notify(channel: String, payload: String = "") async throws {
        try await query("SELECT pg_notify($1, $2)", [channel, payload])
    }

    // MARK: - On the connection thread

    func open() throws {
        thread.preconditionOnThread()
        conn = try Self.openRaw(configuration)
        usable.store(true, ordering: .releasing)
    }

    /// Opens a libpq connection (blocking: call on a connection thread). The one place connection
    /// failures become ``PostgresError``s.
    static func openRaw(_ c: PostgresConfiguration) throws -> OpaquePointer {
        let params: [(String, String)] = [
            ("host", c.host),
            ("port", String(c.port)),
            ("user", c.user),
            ("password", c.password ?? ""),
            ("dbname", c.database),
            ("application_name", c.applicationName),
            ("connect_timeout", String(max(2, c.connectTimeoutSeconds))),
            ("client_encoding", "UTF8"),
            // Fixed text formats the decoders rely on.
            ("options", "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c IntervalStyle=iso_8601 -c client_min_messages=warning"),
        ]
        let keys = params.map { strdup($0.0) }
        let values = params.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPointers = keys.map { UnsafePointer<CChar>($0) } + [nil]
        var valuePointers = values.map { UnsafePointer<CChar>($0) } + [nil]
        let connection = PQconnectdbParams(&keyPointers, &valuePointers, 0)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { trimmed(String(cString: PQerrorMessage($0))) } ?? "out of memory"
            PQfinish(connection)
            let lower = message.lowercased()
            let authentication = lower.contains("password authentication failed")
                || lower.contains("no password supplied")
                || (lower.contains("role \"") && lower.contains("does not exist"))
            throw PostgresError(authentication ? .authenticationFailed : .connectionFailed,
                                authentication ? "authentication failed for user \(c.user): \(message)"
                                               : "cannot connect: \(message)",
                                host: c.host, port: c.port)
        }
        return connection
    }

    func finish() {
        thread.preconditionOnThread()
        usable.store(false, ordering: .releasing)
        if let conn { PQfinish(conn) }
        conn = nil
    }

    func run(_ sql: String, _ binds: [String?]) throws -> PostgresRows {
        thread.preconditionOnThread()
        guard let conn else { throw closedError(sql) }
        let queued = try takeQueued(before: sql)
        let statement = PipelinedStatement(sql: sql, binds: binds, prepare: true)
        if !queued.isEmpty {
            return try runPipeline(conn, queued + [QueuedStatement(statement)]).last!
        }
        guard let name = prepared[sql] else {
            // Prepared and run in one round trip (or run unnamed when the cache is full).
            return try runPipeline(conn, [QueuedStatement(statement)])[0]
        }
        let result = withCStrings(binds) { values in
            PQexecPrepared(conn, name, Int32(values.count), values.baseAddress, nil, nil, 0)
        }
        defer { PQclear(result) }
        do {
            return try check(result, sql: sql)
        } catch let error as PostgresError where Self.invalidatesPrepared(error) {
            // Someone ran DEALLOCATE or DISCARD, or a table changed under a cached plan: prepare
            // again, once, unless a transaction was open (it is aborted now; the caller retries).
            prepared[sql] = nil
            guard PQtransactionStatus(conn) == PQTRANS_IDLE else { throw error }
            return try runPipeline(conn, [QueuedStatement(statement)])[0]
        }
    }

    /// Errors after which a prepared statement must be prepared again.
    private static func invalidatesPrepared(_ error: PostgresError) -> Bool {
        // 26000: no such prepared statement; 0A000: cached plan must not change result type.
        error.sqlState == "26000" || (error.sqlState == "0A000" && error.message.contains("cached plan"))
    }

    private func runCommit(_ statements: [PostgresStatement]) throws -> [PostgresRows] {
        thread.preconditionOnThread()
        guard let conn else { throw closedError("COMMIT") }
        guard transactionState.withLock({ $0.open }) else {
            throw PostgresError(.usage, "commit(after:) ends a transaction; none is open", host: configuration.host,
                                port: configuration.port, query: statements.first?.sql)
        }
        let queued = try takeQueued(before: "COMMIT")
        // Only the BEGIN waiting: nothing was sent, nothing to commit.
        if statements.isEmpty, queued.count == 1, queued[0].statement.sql == Self.begin.sql {
            transactionState.withLock { $0.committed = true }
            return []
        }
        let list = queued + statements.map { QueuedStatement(PipelinedStatement(sql: $0.sql, binds: $0.binds, prepare: true)) }
            + [QueuedStatement(Self.commit)]
        let rows = try runPipeline(conn, list)
        transactionState.withLock { $0.committed = true }
        return Array(rows.dropFirst(queued.count).dropLast())
    }

    /// Sends `statements` in one round trip (libpq pipeline mode) and returns each one's rows.
    /// Statements marked `prepare` run as prepared statements, prepared in the same round trip the
    /// first time. The first error is thrown once every result was read (the server skips the rest
    /// of the pipeline after an error); the connection is then ready for the next statement.
    private func runPipeline(_ conn: OpaquePointer, _ queued: [QueuedStatement]) throws -> [PostgresRows] {
        let statements = queued.map(\.statement)
        let first = statements.first?.sql ?? ""
        guard PQenterPipelineMode(conn) == 1 else {
            throw lostOrFailed(sql: first, message: String(cString: PQerrorMessage(conn)))
        }
        // What was sent, in order: a statement, or the preparation of one under a new name.
        var sent: [(index: Int, preparing: String?)] = []
        var sendFailure: PostgresError?
        for (index, statement) in statements.enumerated() {
            var name = statement.prepare ? prepared[statement.sql] : nil
            if statement.prepare, name == nil, prepared.count < configuration.statementCacheSize {
                preparedNames += 1
                let fresh = "shopfleet_\(preparedNames)"
                guard PQsendPrepare(conn, fresh, statement.sql, Int32(statement.binds.count), nil) == 1 else {
                    sendFailure = lostOrFailed(sql: statement.sql, message: String(cString: PQerrorMessage(conn)))
                    break
                }
                sent.append((index, fresh))
                name = fresh
            }
            let accepted = withCStrings(statement.binds) { values in
                if let name {
                    PQsendQueryPrepared(conn, name, Int32(values.count), values.baseAddress, nil, nil, 0)
                } else {
                    PQsendQueryParams(conn, statement.sql, Int32(values.count), nil, values.baseAddress, nil, nil, 0)
                }
            }
            guard accepted == 1 else {
                sendFailure = lostOrFailed(sql: statement.sql, message: String(cString: PQerrorMessage(conn)))
                break
            }
            sent.append((index, nil))
        }
        if sendFailure == nil, PQpipelineSync(conn) != 1 {
            sendFailure = lostOrFailed(sql: first, message: String(cString: PQerrorMessage(conn)))
        }
        if let sendFailure {
            // What was sent cannot be matched with its results: the pool drops this connection.
            usable.store(false, ordering: .releasing)
            for entry in queued { entry.pending?.set(.failure(sendFailure)) }
            throw sendFailure
        }
        var rows = [PostgresRows](repeating: PostgresRows(affected: 0), count: statements.count)
        var outcomes = [PostgresError?](repeating: nil, count: statements.count)
        var failure: (any Error)?
        for entry in sent {
            let statement = statements[entry.index]
            while let result = PQgetResult(conn) {
                defer { PQclear(result) }
                if PQresultStatus(result) == PGRES_PIPELINE_ABORTED { continue }
                do {
                    let value = try check(result, sql: statement.sql)
                    if let name = entry.preparing {
                        prepared[statement.sql] = name
                    } else if statement.sql == "COMMIT", String(cString: PQcmdStatus(result)) == "ROLLBACK" {
                        throw PostgresError(.server, "COMMIT rolled back: the transaction had failed before it",
                                            host: configuration.host, port: configuration.port, sqlState: "25P02", query: statement.sql)
                    } else {
                        rows[entry.index] = value
                    }
                } catch {
                    if failure == nil { failure = error }
                    if outcomes[entry.index] == nil { outcomes[entry.index] = error as? PostgresError }
                }
            }
            if !isUsable { break }
        }
        if isUsable {
            // The sync point; then the connection leaves pipeline mode.
            if let sync = PQgetResult(conn) { PQclear(sync) }
            if PQexitPipelineMode(conn) != 1 { usable.store(false, ordering: .releasing) }
        }
        // What waits for a statement sent with others learns its outcome: its rows, its error,
        // or that it never ran because one before it failed.
        let skipped = failure.map { PostgresError(.server, "not run: an earlier statement in its round trip failed (\($0))",
                                                   host: configuration.host, port: configuration.port) }
        var failedYet = false
        for (index, entry) in queued.enumerated() {
            if let error = outcomes[index] {
                failedYet = true
                entry.pending?.set(.failure(error))
            } else if failedYet, let skipped {
                entry.pending?.set(.failure(skipped))
            } else {
                entry.pending?.set(.success(rows[index]))
            }
        }
        if let failure { throw failure }
        return rows
    }

    /// Runs `body` with `binds` as C strings (NULL for SQL NULL).
    private func withCStrings<R>(_ binds: [String?], _ body: (UnsafeMutableBufferPointer<UnsafePointer<CChar>?>) -> R) -> R {
        let values = binds.map { $0.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        var pointers = values.map { UnsafePointer<CChar>($0) }
        return pointers.withUnsafeMutableBufferPointer { body($0) }
    }

    func runSimple(_ sql: String) throws {
        thread.preconditionOnThread()
        guard let conn else { throw closedError(sql) }
        // What waits (BEGIN, statements sent with the next) goes first, in a round trip of its own:
        // the simple protocol cannot join a pipeline.
        let queued = try takeQueued(before: sql)
        if !queued.isEmpty { _ = try runPipeline(conn, queued) }
        let result = PQexec(conn, sql)
        defer { PQclear(result) }
        _ = try check(result, sql: sql)
    }

    /// The one place libpq statuses become Swift errors.
    private func check(_ result: OpaquePointer?, sql: String) throws -> PostgresRows {
        let c = configuration
        guard let result else {
            throw lostOrFailed(sql: sql, message: conn.map { String(cString: PQerrorMessage($0)) } ?? "no result")
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PostgresRows(affected: Self.affectedRows(result))
        case PGRES_TUPLES_OK:
            return PostgresRows(result: result)
        default:
            func field(_ code: Int32) -> String? {
                PQresultErrorField(result, code).map { String(cString: $0) }
            }
            if let sqlState = field(Int32(UInt8(ascii: "C"))) {
                if let conn, PQstatus(conn) != CONNECTION_OK { usable.store(false, ordering: .releasing) }
                throw PostgresError(.server, field(Int32(UInt8(ascii: "M"))) ?? "error", host: c.host, port: c.port,
                                    sqlState: sqlState, detail: field(Int32(UInt8(ascii: "D"))),
                                    hint: field(Int32(UInt8(ascii: "H"))), query: sql)
            }
            throw lostOrFailed(sql: sql, message: String(cString: PQresultErrorMessage(result)))
        }
    }

    private func lostOrFailed(sql: String, message: String) -> PostgresError {
        let c = configuration
        if let conn, PQstatus(conn) != CONNECTION_OK {
            usable.store(false, ordering: .releasing)
            return PostgresError(.connectionLost, "connection lost: \(Self.trimmed(message))", host: c.host, port: c.port, query: sql)
        }
        return PostgresError(.server, Self.trimmed(message), host: c.host, port: c.port, query: sql)
    }

    private func closedError(_ sql: String) -> PostgresError {
        PostgresError(.closed, "connection is closed", host: configuration.host, port: configuration.port, query: sql)
    }

    private static func affectedRows(_ result: OpaquePointer) -> Int {
        guard let text = PQcmdTuples(result) else { return 0 }
        return Int(String(cString: text)) ?? 0
    }

    static func trimmed(_ s: String) -> String {
        var s = Substring(s)
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

/// A statement and its parameters, for ``PostgresConnection/commit(after:)``.
public struct PostgresStatement: Sendable {
    public let sql: String
    let binds: [String?]

    public init(_ sql: String, _ binds: [any PostgresEncodable] = []) {
        self.sql = sql
        self.binds = binds.map(\.postgresText)
    }
}

/// One statement of a pipeline: prepared (cached by its text) or sent unnamed.
struct PipelinedStatement {
    let sql: String
    let binds: [String?]
    let prepare: Bool
}

/// A statement sent with the next one (``PostgresConnection/sendWithNext(_:)``): its outcome, once
/// that round trip is done.
public final class PostgresPendingResult: Sendable {
    private let outcome = Mutex<Result<PostgresRows, PostgresError>?>(nil)

    /// Nil until the statement's round trip is done (or if it never went: the transaction
    /// ended first).
    public var result: Result<PostgresRows, PostgresError>? { outcome.withLock { $0 } }

    func set(_ result: Result<PostgresRows, PostgresError>) { outcome.withLock { $0 = result } }
}

/// A statement waiting for the transaction's next round trip, and who waits for its result.
struct QueuedStatement {
    let statement: PipelinedStatement
    let pending: PostgresPendingResult?

    init(_ statement: PipelinedStatement, _ pending: PostgresPendingResult? = nil) {
        self.statement = statement
        self.pending = pending
    }
}

struct TransactionState {
    var open = false
    var committed = false
    var queued: [QueuedStatement] = []

    /// BEGIN went out (it is queued first and leaves with the first round trip): a failure must be
    /// rolled back.
    var begun: Bool { open && queued.first?.statement.sql != "BEGIN" }
}
