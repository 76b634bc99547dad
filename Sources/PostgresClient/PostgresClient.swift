public import ClientRuntime
public import Logging

/// A bounded pool of ``PostgresConnection``s, the way services talk to PostgreSQL.
///
/// A broken connection (server restarted, network cut) is dropped when it comes back to the pool
/// and a new one is opened for the next caller, so the client recovers without a restart.
public final class PostgresClient: Sendable {
    public let configuration: PostgresConfiguration
    private let pool: ConnectionPool<PostgresConnection>

    /// With `thread`, every connection of the pool is driven without blocking by that one thread
    /// (``PostgresConnection/connect(_:logger:on:)``) instead of a thread each: code running on
    /// that thread (a worker's consumers, on its AMQP connection's thread) then awaits its round
    /// trips without waking another thread.
    public init(configuration: PostgresConfiguration, maximumConnections: Int = 10,
                acquireTimeout: Duration = .seconds(10),
                logger: Logger = Logger(label: "shopfleet.postgres"),
                on thread: ConnectionThread? = nil) {
        self.configuration = configuration
        self.pool = ConnectionPool(maximum: maximumConnections, acquireTimeout: acquireTimeout) {
            try await PostgresConnection.connect(configuration, logger: logger, on: thread)
        }
    }

    public func withConnection<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await pool.withConnection(body)
        } catch let error as ConnectionPoolError {
            throw PostgresError(error.reason == .closed ? .closed : .poolTimeout, error.description,
                                host: configuration.host, port: configuration.port)
        }
    }

    @discardableResult
    public func query(_ sql: String, _ binds: [any PostgresEncodable] = []) async throws -> PostgresRows {
        try await withConnection { try await $0.query(sql, binds) }
    }

    @discardableResult
    public func query(_ sql: String, _ binds: any PostgresEncodable...) async throws -> PostgresRows {
        try await query(sql, binds)
    }

    /// Runs `body` in a transaction on one pooled connection; rolls back when it throws.
    public func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await withConnection { try await $0.transaction(body) }
    }

    public var openConnections: Int { get async { await pool.openCount } }

    public func close() async { await pool.close() }
}
