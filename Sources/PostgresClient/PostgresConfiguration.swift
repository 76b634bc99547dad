public import ClientRuntime

/// Where and how to connect. Built from a URL:
/// `postgres://user:password@host:port/database?application_name=x&connect_timeout=5`
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

    public init(host: String = "localhost", port: Int = 5432, user: String, password: String? = nil,
                database: String? = nil, applicationName: String = "shopfleet", connectTimeoutSeconds: Int = 5) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database ?? user
        self.applicationName = applicationName
        self.connectTimeoutSeconds = connectTimeoutSeconds
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
                  connectTimeoutSeconds: parsed.queryValue("connect_timeout").flatMap { Int($0) } ?? 5)
    }

    /// Safe to log: no password.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }
}
