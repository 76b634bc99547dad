import ClientRuntime

/// A bounded pool of ``RedisConnection``s. A connection that broke (server restarted) is dropped
/// when it comes back, and the next command opens a new one: commands fail clearly while Redis is
/// down and work again once it is back.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let pool: ConnectionPool<RedisConnection>

    public init(configuration: RedisConfiguration, maximumConnections: Int = 8, acquireTimeout: Duration = .seconds(5)) {
        self.configuration = configuration
        self.pool = ConnectionPool(maximum: maximumConnections, acquireTimeout: acquireTimeout) {
            try await RedisConnection.connect(configuration)
        }
    }

    /// Runs `body` with a connection of the pool, on that connection's own thread: the body is
    /// resumed there when its replies arrive, with no handover to Swift's pool (see
    /// ``RedisConnection/executor``). Keep the body short and non-blocking. The connection is the
    /// body's alone while it runs (for WATCH and MULTI).
    public func withConnection<T: Sendable>(_ body: (RedisConnection) async throws -> T) async throws -> T {
        try await withPooled { connection in
            try await withTaskExecutorPreference(connection.executor) { try await body(connection) }
        }
    }

    /// A single call needs no pinning: it writes its command from the caller's thread, and its
    /// reply wakes the caller once.
    private func withPooled<T: Sendable>(_ body: (RedisConnection) async throws -> T) async throws -> T {
        do {
            return try await pool.withConnection(body)
        } catch let error as ConnectionPoolError {
            throw RedisError(error.reason == .closed ? .closed : .poolTimeout, error.description,
                             host: configuration.host, port: configuration.port)
        }
    }

    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        try await withPooled { try await $0.send(command) }
    }

    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RedisReply {
        try await send(RedisCommand(name, arguments))
    }

    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        try await withPooled { try await $0.pipeline(commands) }
    }

    public func transaction(_ commands: [RedisCommand]) async throws -> [RedisReply]? {
        try await withPooled { try await $0.transaction(commands) }
    }

    @discardableResult
    public func evaluate(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) async throws -> RedisReply {
        try await withPooled { try await $0.evaluate(script, keys: keys, arguments: arguments) }
    }

    public var openConnections: Int { get async { await pool.openCount } }

    public func close() async { await pool.close() }
}
