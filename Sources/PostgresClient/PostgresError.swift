/// Every failure of the PostgreSQL client: what failed (``Code``), where (host, port, the query),
/// and, for server errors, the SQLSTATE and the server's own message.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidConfiguration, connectionFailed, authenticationFailed, connectionLost
            case server, decoding, poolTimeout, closed, migration, usage
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The URL or a setting is wrong.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// No connection could be made (server not running, unreachable, timed out).
        public static let connectionFailed = Code(.connectionFailed)
        /// The server refused the user name or password.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The connection broke during a query; whether a COMMIT in flight took effect is unknown.
        public static let connectionLost = Code(.connectionLost)
        /// The server answered with an error; see `sqlState`.
        public static let server = Code(.server)
        /// A value could not be read as the type asked for.
        public static let decoding = Code(.decoding)
        /// Every pooled connection stayed busy past the pool's acquire timeout.
        public static let poolTimeout = Code(.poolTimeout)
        /// The connection or pool was closed.
        public static let closed = Code(.closed)
        /// A migration file is missing, malformed or was changed after it was applied.
        public static let migration = Code(.migration)
        /// The client was used in a way that cannot work (a statement after the transaction's commit).
        public static let usage = Code(.usage)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    public var sqlState: String?
    public var detail: String?
    public var hint: String?
    public var host: String
    public var port: Int
    public var query: String?

    public init(_ code: Code, _ message: String, host: String, port: Int, sqlState: String? = nil,
                detail: String? = nil, hint: String? = nil, query: String? = nil) {
        self.code = code
        self.message = message
        self.host = host
        self.port = port
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.query = query
    }

    public var description: String {
        var s = "PostgreSQL \(host):\(port): \(code): \(message)"
        if let sqlState { s += " (SQLSTATE \(sqlState))" }
        if let detail { s += "; detail: \(detail)" }
        if let hint { s += "; hint: \(hint)" }
        if let query { s += "; query: \(query.prefix(200))" }
        return s
    }
}
