public import ClientRuntime

/// Where and how to connect. Built from a URL:
/// `postgres://user:password@host:port/database?application_name=x&connect_timeout=5&statement_cache=256`
/// (`postgresql://` too). Defaults: host `localhost`, port 5432, database = user.
public struct PostgresConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var applicationName: String
    /// Seconds to wait for a connection (libpq's `connect_timeout`; it takes whole seconds, at least 2).
    public var connectTimeoutSeconds: Int
    /// Statements each connection prepares once and then runs by name (the server parses and plans
    /// them once). 0 runs every statement unnamed: needed behind a pooler in transaction mode
    /// (PgBouncer), where the next transaction may be on another server connection.
    public var statementCacheSize: Int

    public init(host: String = "localhost", port: Int = 5432, user: String, password: String? = nil,
                database: String? = nil, applicationName: String = "shopfleet", connectTimeoutSeconds: Int = 5,
                statementCacheSize: Int = 256) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database ?? user
        self.applicationName = applicationName
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.statementCacheSize = max(0, statementCacheSize)
    }

    public init(url: String) throws {
        let parsed: ServerURL
        do {
            parsed = try ServerURL(url, schemes: ["postgres", "postgresql"])
        } catch let error as ServerURL.ParseError {
            throw PostgresError(.invalidConfiguration, error.description, host: "?", port: 0)
        }
        guard let user = parsed.user else {
            throw PostgresError(.invalidConfiguration, "URL \(ServerURL.redact(url)) names no user", host: parsed.host, port: parsed.port ?? 5432)
        }
        self.init(host: parsed.host, port: parsed.port ?? 5432, user: user, password: parsed.password,
                  database: parsed.path.isEmpty ? nil : parsed.path,
                  applicationName: parsed.queryValue("application_name") ?? "shopfleet",
                  connectTimeoutSeconds: parsed.queryValue("connect_timeout").flatMap { Int($0) } ?? 5,
                  statementCacheSize: try Self.count(parsed.queryValue("statement_cache"), "statement_cache", url: url) ?? 256)
    }

    private static func count(_ text: String?, _ key: String, url: String) throws -> Int? {
        guard let text else { return nil }
        guard let value = Int(text), value >= 0 else {
            throw PostgresError(.invalidConfiguration, "URL \(ServerURL.redact(url)): \(key) must be a whole number ≥ 0, not '\(text)'",
                                host: "?", port: 0)
        }
        return value
    }

    /// Safe to log: no password.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }
}
