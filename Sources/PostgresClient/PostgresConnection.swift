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
    /// A transaction's BEGIN waits to go with its first statement: one thread hop fewer.
    private let beginDeferred = Atomic<Bool>(false)

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
    /// rethrown). A failed COMMIT throws as well.
    ///
    /// The connection belongs to the transaction until it ends, so the body runs on the
    /// connection's own thread (task executor preference): its statements run inline, with no
    /// handover between threads. Code isolated to an actor still runs on that actor.
    public func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withTaskExecutorPreference(thread) {
            beginDeferred.store(true, ordering: .releasing)
            let result: T
            do {
                result = try await body(self)
            } catch {
                // Nothing reached the server if BEGIN is still waiting: nothing to roll back.
                if !beginDeferred.exchange(false, ordering: .acquiringAndReleasing), isUsable {
                    do { try await simpleQuery("ROLLBACK") } catch {
                        logger.warning("rollback failed", metadata: ["error": "\(error)"])
                    }
                }
                throw error
            }
            if !beginDeferred.exchange(false, ordering: .acquiringAndReleasing) {
                try await simpleQuery("COMMIT")
            }
            return result
        }
    }

    /// Sends a deferred BEGIN before the statement that needs it. On the thread.
    private func beginIfDeferred(_ conn: OpaquePointer, before sql: String) throws {
        guard beginDeferred.exchange(false, ordering: .acquiringAndReleasing) else { return }
        let result = PQexec(conn, "BEGIN")
        defer { PQclear(result) }
        _ = try check(result, sql: "BEGIN")
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
        try beginIfDeferred(conn, before: sql)
        let values = binds.map { $0.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        var pointers = values.map { UnsafePointer<CChar>($0) }
        let result = pointers.withUnsafeMutableBufferPointer { buffer in
            PQexecParams(conn, sql, Int32(buffer.count), nil, buffer.baseAddress, nil, nil, 0)
        }
        defer { PQclear(result) }
        return try check(result, sql: sql)
    }

    func runSimple(_ sql: String) throws {
        thread.preconditionOnThread()
        guard let conn else { throw closedError(sql) }
        try beginIfDeferred(conn, before: sql)
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
