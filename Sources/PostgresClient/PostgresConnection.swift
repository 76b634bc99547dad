public import ClientRuntime
import CLibPQ
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection, driven without blocking by a thread: a thread of its own, or one it
/// shares with other connections (``connect(_:logger:on:)``). libpq runs in non-blocking mode; the
/// thread sends statements and reads their results as the socket becomes ready, so it never waits
/// on one connection. Every libpq call happens on that thread; callers `await` the result.
public final class PostgresConnection: PooledConnection, @unchecked Sendable {
    public let configuration: PostgresConfiguration
    private let thread: ConnectionThread
    /// The thread is this connection's own: closing the connection ends it.
    private let ownsThread: Bool
    /// The round trip in flight, the ones waiting for it, and the socket the thread watches.
    /// Touched only on `thread`.
    private var inFlight: RoundTrip?
    private var waitingRoundTrips: [() -> Void] = []
    private var socket: Int32 = -1
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

    private init(configuration: PostgresConfiguration, logger: Logger, thread: ConnectionThread, ownsThread: Bool, conn: OpaquePointer) {
        self.configuration = configuration
        self.logger = logger
        self.thread = thread
        self.ownsThread = ownsThread
        self.conn = conn
    }

    /// Opens a connection; fails with `.connectionFailed` (naming host and port) or
    /// `.authenticationFailed` within the configured connect timeout.
    ///
    /// Without `thread`, the connection gets a thread of its own. With it, `thread` drives the
    /// connection alongside whatever else it serves (a worker's AMQP connection, where its handlers
    /// run): code running there awaits a round trip without waking any other thread. Opening
    /// blocks, so a shared thread's connection is opened on a short-lived thread of its own first.
    public static func connect(
        _ configuration: PostgresConfiguration,
        logger: Logger = Logger(label: "shopfleet.postgres"),
        on thread: ConnectionThread? = nil
    ) async throws -> PostgresConnection {
        let name = "postgres \(configuration.host):\(configuration.port)"
        let opener = ConnectionThread(name: thread == nil ? name : name + " (opening)")
        let driver = thread ?? opener
        do {
            let raw = try await opener.submit { RawConnection(pointer: try openRaw(configuration)) }
            let connection = PostgresConnection(configuration: configuration, logger: logger, thread: driver,
                                                ownsThread: thread == nil, conn: raw.pointer)
            do {
                try await driver.submit { try connection.attach() }
            } catch {
                PQfinish(raw.pointer)
                throw error
            }
            if thread != nil { opener.stop() }
            return connection
        } catch {
            opener.stop()
            throw error
        }
    }

    /// The connection's thread as a task executor: code run under
    /// `withTaskExecutorPreference(connection.executor)` calls this connection without a handover
    /// between threads. Keep such code short and non-blocking: the connection is serviced there too.
    public var executor: any TaskExecutor { thread }

    public var isUsable: Bool { usable.load(ordering: .acquiring) }

    public func close() async {
        // A shared thread that already stopped runs nothing any more: the connection is finished here.
        do { try await thread.submit { self.finish() } } catch { finishDetached() }
        if ownsThread { thread.stop() }
    }

    /// Runs one statement with `$1…$n` parameters and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ binds: [any PostgresEncodable] = []) async throws -> PostgresRows {
        let texts = binds.map(\.postgresText)
        return try await thread.submitDeferred { continuation in
            self.run(sql, texts) { continuation.resume(with: $0) }
        }
    }

    @discardableResult
    public func query(_ sql: String, _ binds: any PostgresEncodable...) async throws -> PostgresRows {
        try await query(sql, binds)
    }

    /// Runs one or more statements with the simple protocol (no parameters): for migrations and DDL.
    public func simpleQuery(_ sql: String) async throws {
        try await thread.submitDeferred { continuation in
            self.runSimple(sql) { continuation.resume(with: $0) }
        }
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws (the error is
    /// rethrown). A failed COMMIT throws as well. The body may end the transaction itself with
    /// ``commit(after:)``, which sends its last statements and the COMMIT in one round trip.
    ///
    /// The connection belongs to the transaction until it ends, so the body runs on the
    /// connection's thread (task executor preference): its statements are sent inline and it
    /// resumes there when their results arrive, with no handover between threads. Code isolated to
    /// an actor still runs on that actor.
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
        try await thread.submitDeferred { continuation in
            self.runCommit(statements) { continuation.resume(with: $0) }
        }
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

    /// Takes what waits to go with the next round trip; refuses a statement on a closed connection
    /// or after the commit. On the thread.
    private func takeQueued(before sql: String) throws -> [QueuedStatement] {
        guard conn != nil else { throw closedError(sql) }
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
        let closing = conn
        conn = nil
        // Round trips waiting to start find no connection and fail as closed.
        stop(failing: closedError(""))
        if let closing { PQfinish(closing) }
    }

    /// `finish` for a connection whose (shared) thread has stopped: nothing runs there any more.
    private func finishDetached() {
        usable.store(false, ordering: .releasing)
        if let conn { PQfinish(conn) }
        conn = nil
    }

    // MARK: - On the connection's thread

    /// Switches to non-blocking sends and waits on the socket from now on.
    private func attach() throws {
        thread.preconditionOnThread()
        guard let conn, PQsetnonblocking(conn, 1) == 0 else {
            throw PostgresError(.connectionFailed, "cannot make the connection non-blocking", host: configuration.host, port: configuration.port)
        }
        socket = PQsocket(conn)
        thread.watch(socket) { readable, writable in self.socketReady(readable: readable, writable: writable) }
        usable.store(true, ordering: .releasing)
    }

    private func run(_ sql: String, _ binds: [String?], _ done: @escaping (Result<PostgresRows, any Error>) -> Void) {
        let queued: [QueuedStatement]
        do { queued = try takeQueued(before: sql) } catch { return done(.failure(error)) }
        let statement = PipelinedStatement(sql: sql, binds: binds, prepare: true)
        let cached = queued.isEmpty && prepared[sql] != nil
        startPipeline(queued + [QueuedStatement(statement)]) { result in
            if case .failure(let error as PostgresError) = result, cached, Self.invalidatesPrepared(error) {
                // Someone ran DEALLOCATE or DISCARD, or a table changed under a cached plan: prepare
                // again, and retry once unless a transaction was open (it is aborted now; the
                // caller retries).
                self.prepared[sql] = nil
                if let conn = self.conn, PQtransactionStatus(conn) == PQTRANS_IDLE {
                    return self.startPipeline([QueuedStatement(statement)]) { done($0.map { $0[0] }) }
                }
            }
            done(result.map { $0.last! })
        }
    }

    private func runCommit(_ statements: [PostgresStatement], _ done: @escaping (Result<[PostgresRows], any Error>) -> Void) {
        let plan: (list: [QueuedStatement], queuedCount: Int)?
        do { plan = try commitPlan(statements) } catch { return done(.failure(error)) }
        guard let plan else { return done(.success([])) }
        startPipeline(plan.list) { result in
            done(result.map { rows in
                self.transactionState.withLock { $0.committed = true }
                return Array(rows.dropFirst(plan.queuedCount).dropLast())
            })
        }
    }

    private func runSimple(_ sql: String, _ done: @escaping (Result<Void, any Error>) -> Void) {
        let queued: [QueuedStatement]
        do { queued = try takeQueued(before: sql) } catch { return done(.failure(error)) }
        // What waits goes first, in a round trip of its own: the simple protocol cannot join a pipeline.
        if queued.isEmpty { return startSimple(sql, done) }
        startPipeline(queued) { result in
            if case .failure(let error) = result { return done(.failure(error)) }
            self.startSimple(sql, done)
        }
    }

    /// Starts a round trip now, or after the one in flight (two callers on one connection).
    private func begin(_ start: @escaping () -> Void) {
        if inFlight == nil { start() } else { waitingRoundTrips.append(start) }
    }

    /// Sends `queued` in one round trip (libpq pipeline mode) and calls `done` with each one's rows.
    /// Statements marked `prepare` run as prepared statements, prepared in the same round trip the
    /// first time. The first error is reported once every result was read (the server skips the
    /// rest of the pipeline after an error); the connection is then ready for the next statement.
    private func startPipeline(_ queued: [QueuedStatement], _ done: @escaping (Result<[PostgresRows], any Error>) -> Void) {
        begin {
            let sql = queued.first?.statement.sql ?? ""
            guard let conn = self.conn else { return done(.failure(self.closedError(sql))) }
            guard self.isUsable else { return done(.failure(self.brokenError(sql))) }
            do {
                self.inFlight = .pipeline(try self.sendPipeline(conn, queued), done)
            } catch {
                return done(.failure(error))
            }
            self.flush(conn)
        }
    }

    private func startSimple(_ sql: String, _ done: @escaping (Result<Void, any Error>) -> Void) {
        begin {
            guard let conn = self.conn else { return done(.failure(self.closedError(sql))) }
            guard self.isUsable else { return done(.failure(self.brokenError(sql))) }
            guard PQsendQuery(conn, sql) == 1 else { return done(.failure(self.lostOrFailed(sql: sql, message: String(cString: PQerrorMessage(conn))))) }
            self.inFlight = .simple(sql: sql, failure: nil, done)
            self.flush(conn)
        }
    }

    /// Sends what libpq holds; asks the thread for writability while some is left.
    private func flush(_ conn: OpaquePointer) {
        let left = PQflush(conn)
        if left < 0 { return lost(String(cString: PQerrorMessage(conn))) }
        thread.watch(socket, writable: left == 1)
    }

    private func socketReady(readable: Bool, writable: Bool) {
        guard let conn else { return }
        if writable { flush(conn) }
        if readable, PQconsumeInput(conn) == 0 {
            return lost(String(cString: PQerrorMessage(conn)))
        }
        readResults(conn)
    }

    /// Reads every result that is complete, without blocking; ends the round trip when its last
    /// one (a pipeline's sync point, or a simple query's end) is read.
    private func readResults(_ conn: OpaquePointer) {
        guard let trip = inFlight else { return }
        switch trip {
        case .pipeline(var progress, let done):
            while PQisBusy(conn) == 0 {
                if progress.reading < progress.sent.count {
                    if let result = PQgetResult(conn) {
                        absorb(result, into: &progress)
                        PQclear(result)
                        continue
                    }
                    progress.reading += 1
                    if !isUsable { break }
                } else {
                    // The sync point; then the connection leaves pipeline mode.
                    if let sync = PQgetResult(conn) { PQclear(sync) }
                    if PQexitPipelineMode(conn) != 1 { usable.store(false, ordering: .releasing) }
                    return endRoundTrip { done(Result { try self.settle(progress) }) }
                }
            }
            if !isUsable { return endRoundTrip { done(Result { try self.settle(progress) }) } }
            inFlight = .pipeline(progress, done)
        case .simple(let sql, var failure, let done):
            while PQisBusy(conn) == 0 {
                guard let result = PQgetResult(conn) else {
                    return endRoundTrip { done(failure.map { .failure($0) } ?? .success(())) }
                }
                do { _ = try check(result, sql: sql) } catch { if failure == nil { failure = error } }
                PQclear(result)
            }
            inFlight = .simple(sql: sql, failure: failure, done)
        }
    }

    /// Ends the round trip in flight, tells its caller, and starts the next one waiting.
    private func endRoundTrip(_ tell: () -> Void) {
        inFlight = nil
        tell()
        if inFlight == nil, !waitingRoundTrips.isEmpty {
            waitingRoundTrips.removeFirst()()
        }
    }

    /// The server went away (or the socket failed): fails the round trip in flight, and the
    /// connection; the pool drops it.
    private func lost(_ message: String) {
        stop(failing: PostgresError(.connectionLost, "connection lost: \(Self.trimmed(message))",
                                    host: configuration.host, port: configuration.port))
    }

    /// Marks the connection unusable, stops watching its socket, and fails the round trip in flight
    /// and every one waiting with `error`.
    private func stop(failing error: PostgresError) {
        usable.store(false, ordering: .releasing)
        if socket >= 0 { thread.unwatch(socket) }
        socket = -1
        endRoundTrips(with: error)
    }

    /// Fails the round trip in flight and every one waiting with `error`.
    private func endRoundTrips(with error: PostgresError) {
        let trip = inFlight
        inFlight = nil
        switch trip {
        case .pipeline(let progress, let done)?:
            for entry in progress.queued { entry.pending?.set(.failure(error)) }
            done(.failure(error))
        case .simple(_, _, let done)?:
            done(.failure(error))
        case nil:
            break
        }
        // Those waiting start, find the connection unusable or closed, and fail.
        let waiting = waitingRoundTrips
        waitingRoundTrips = []
        for start in waiting { start() }
    }

    /// Errors after which a prepared statement must be prepared again.
    private static func invalidatesPrepared(_ error: PostgresError) -> Bool {
        // 26000: no such prepared statement; 0A000: cached plan must not change result type.
        error.sqlState == "26000" || (error.sqlState == "0A000" && error.message.contains("cached plan"))
    }

    /// What a commit sends: what waits, the statements, COMMIT; nil when nothing was ever sent
    /// (only the BEGIN waits), so there is nothing to commit.
    private func commitPlan(_ statements: [PostgresStatement]) throws -> (list: [QueuedStatement], queuedCount: Int)? {
        guard transactionState.withLock({ $0.open }) else {
            throw PostgresError(.usage, "commit(after:) ends a transaction; none is open", host: configuration.host,
                                port: configuration.port, query: statements.first?.sql)
        }
        let queued = try takeQueued(before: "COMMIT")
        if statements.isEmpty, queued.count == 1, queued[0].statement.sql == Self.begin.sql {
            transactionState.withLock { $0.committed = true }
            return nil
        }
        let list = queued + statements.map { QueuedStatement(PipelinedStatement(sql: $0.sql, binds: $0.binds, prepare: true)) }
            + [QueuedStatement(Self.commit)]
        return (list, queued.count)
    }

    /// Enters pipeline mode and sends the statements (each prepared under a new name the first
    /// time) and a sync point. A failure to send fails every statement and the connection.
    private func sendPipeline(_ conn: OpaquePointer, _ queued: [QueuedStatement]) throws -> PipelineProgress {
        let statements = queued.map(\.statement)
        let first = statements.first?.sql ?? ""
        guard PQenterPipelineMode(conn) == 1 else {
            throw lostOrFailed(sql: first, message: String(cString: PQerrorMessage(conn)))
        }
        var progress = PipelineProgress(queued: queued)
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
                progress.sent.append((index, fresh))
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
            progress.sent.append((index, nil))
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
        return progress
    }

    /// One result of the statement being read.
    private func absorb(_ result: OpaquePointer, into progress: inout PipelineProgress) {
        if PQresultStatus(result) == PGRES_PIPELINE_ABORTED { return }
        let entry = progress.sent[progress.reading]
        let statement = progress.queued[entry.index].statement
        do {
            let value = try check(result, sql: statement.sql)
            if let name = entry.preparing {
                prepared[statement.sql] = name
            } else if statement.sql == "COMMIT", String(cString: PQcmdStatus(result)) == "ROLLBACK" {
                throw PostgresError(.server, "COMMIT rolled back: the transaction had failed before it",
                                    host: configuration.host, port: configuration.port, sqlState: "25P02", query: statement.sql)
            } else {
                progress.rows[entry.index] = value
            }
        } catch {
            if progress.failure == nil { progress.failure = error }
            if progress.outcomes[entry.index] == nil { progress.outcomes[entry.index] = error as? PostgresError }
        }
    }

    /// Tells whoever waits for a statement sent with others its outcome (its rows, its error, or
    /// that it never ran because one before it failed); then the rows, or the first error.
    private func settle(_ progress: PipelineProgress) throws -> [PostgresRows] {
        let skipped = progress.failure.map { PostgresError(.server, "not run: an earlier statement in its round trip failed (\($0))",
                                                            host: configuration.host, port: configuration.port) }
        var failedYet = false
        for (index, entry) in progress.queued.enumerated() {
            if let error = progress.outcomes[index] {
                failedYet = true
                entry.pending?.set(.failure(error))
            } else if failedYet, let skipped {
                entry.pending?.set(.failure(skipped))
            } else {
                entry.pending?.set(.success(progress.rows[index]))
            }
        }
        if let failure = progress.failure { throw failure }
        return progress.rows
    }

    /// Runs `body` with `binds` as C strings (NULL for SQL NULL).
    private func withCStrings<R>(_ binds: [String?], _ body: (UnsafeMutableBufferPointer<UnsafePointer<CChar>?>) -> R) -> R {
        let values = binds.map { $0.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        var pointers = values.map { UnsafePointer<CChar>($0) }
        return pointers.withUnsafeMutableBufferPointer { body($0) }
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

    /// A statement after the connection broke (it keeps its handle until the pool closes it).
    private func brokenError(_ sql: String) -> PostgresError {
        PostgresError(.connectionLost, "connection lost earlier; not sent", host: configuration.host, port: configuration.port, query: sql)
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

/// A pipeline sent, and what came back so far.
struct PipelineProgress {
    let queued: [QueuedStatement]
    /// What was sent, in order: a statement (by its index in `queued`), or its preparation under
    /// a new name.
    var sent: [(index: Int, preparing: String?)] = []
    /// The entry of `sent` whose results are being read.
    var reading = 0
    var rows: [PostgresRows]
    var outcomes: [PostgresError?]
    var failure: (any Error)?

    init(queued: [QueuedStatement]) {
        self.queued = queued
        self.rows = [PostgresRows](repeating: PostgresRows(affected: 0), count: queued.count)
        self.outcomes = [PostgresError?](repeating: nil, count: queued.count)
    }
}

/// A round trip in flight on a connection driven without blocking, and who waits for it.
enum RoundTrip {
    case pipeline(PipelineProgress, (Result<[PostgresRows], any Error>) -> Void)
    case simple(sql: String, failure: (any Error)?, (Result<Void, any Error>) -> Void)
}

/// A libpq connection handed from the thread that opened it to the one that drives it.
struct RawConnection: @unchecked Sendable {
    let pointer: OpaquePointer
}
