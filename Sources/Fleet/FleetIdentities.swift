import ClientRuntime
import Crypto
public import FoundationEssentials
public import Messaging
public import PostgresClient
public import RabbitManagement
import Synchronization

/// Who each service of the fleet is on the broker and on the database: a RabbitMQ user
/// `shopfleet-<service>` with the rights the topology derives for it (``BrokerPermissions``), and,
/// for every worker, a PostgreSQL login role `shopfleet_<service>` that owns the service's schema
/// and nothing else. The edge has no database role.
///
/// Every password is derived from one fleet secret (`SHOPFLEET_FLEET_SECRET`, 32 bytes or more)
/// as HMAC-SHA256(secret, "amqp/<service>") or "postgres/<service>", so the operator's tools —
/// `topology apply`, `shopfleet provision`, the fleet supervisor — agree on them without storing
/// any, and a service's process receives its own password only, never the fleet secret.
public struct FleetIdentities: Sendable {
    public static let secretKey = "SHOPFLEET_FLEET_SECRET"

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    private let key: SymmetricKey

    public init(secret: String) throws {
        guard secret.utf8.count >= 32 else {
            throw Invalid(description: "\(Self.secretKey) must be at least 32 bytes (it derives every service's passwords)")
        }
        key = SymmetricKey(data: Data(secret.utf8))
    }

    /// The services with a database role: every worker.
    public static let databaseServices = FleetPlan.workerRoles

    public static func brokerUser(_ service: String) -> String { BrokerPermissions.user(of: service) }
    public static func databaseRole(_ service: String) -> String { "shopfleet_\(service)" }
    /// The schema a service's role owns: the service's name.
    public static func schema(_ service: String) -> String { service }

    func password(_ purpose: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(purpose.utf8), using: key)).lowercaseHex
    }

    public func brokerPassword(_ service: String) -> String { password("amqp/\(service)") }
    public func databasePassword(_ service: String) -> String { password("postgres/\(service)") }

    /// `url` (the operator's `amqp://…`) with the service's user and password in it.
    public func amqpURL(_ url: String, service: String) -> String {
        Self.replacingUserInfo(url, user: Self.brokerUser(service), password: brokerPassword(service))
    }

    /// `url` (the operator's `postgres://…/database`) with the service's role and password in it.
    public func databaseURL(_ url: String, service: String) -> String {
        Self.replacingUserInfo(url, user: Self.databaseRole(service), password: databasePassword(service))
    }

    /// `url` without its user and password.
    public static func withoutUserInfo(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://")?.upperBound else { return url }
        let rest = url[schemeEnd...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<schemeEnd]) + String(url[rest.index(after: at)...])
    }

    static func replacingUserInfo(_ url: String, user: String, password: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://")?.upperBound else { return url }
        let rest = url[schemeEnd...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let hostStart = authority.lastIndex(of: "@").map { authority.index(after: $0) } ?? authority.startIndex
        return String(url[..<schemeEnd]) + "\(user):\(password)@" + String(url[hostStart...])
    }

    // MARK: - Making the identities

    /// Creates or updates each service's broker user (a password; no tags, so no management access,
    /// but for the edge's `management`)
    /// and sets its rights on `vhost` to exactly what the topology derives. Run with the
    /// management identity (`topology apply`).
    public func applyBrokerUsers(_ topology: Topology, vhost: String, management: RabbitManagement) async throws -> [BrokerPermissions] {
        let permissions = topology.permissions()
        for entry in permissions {
            // The edge reads its vhost's queues for the operations console: `management`, which sees
            // its own vhost and may do over HTTP only what its broker rights allow (not `monitoring`,
            // which sees every vhost and connection); no other service may use the management API.
            try await management.putUser(entry.user, password: brokerPassword(entry.service),
                                         tags: entry.service == Topology.edgeService ? "management" : "")
            try await management.setPermissions(entry, vhost: vhost)
        }
        return permissions
    }

    /// In the database `database` is connected to, as an operator (the migrations identity, or
    /// the cluster's superuser in tests): each worker's login role (made or given its password),
    /// the schema it owns, `pg_trgm` for search, and no rights for anyone else — nobody but the
    /// roles may connect, and no role may use another's schema. Returns a line per service.
    public func applyDatabaseRoles(_ database: PostgresClient) async throws -> [String] {
        // Roles belong to the whole cluster: two fleets provisioned at once (tests) take turns.
        try await Self.roleTurns.run { [self] in
            var report: [String] = []
            let name = try await database.query("SELECT current_database()").first?.text(0) ?? ""
            try await database.query("REVOKE ALL ON DATABASE \(quoteIdentifier(name)) FROM PUBLIC")
            try await database.query("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            for service in Self.databaseServices {
                let role = Self.databaseRole(service), schema = Self.schema(service)
                let verifier = SCRAM.verifier(password: databasePassword(service))
                // (SUPERUSER and REPLICATION, a migrations identity may not even mention: new roles have neither.)
                let options = "LOGIN NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD \(quoteLiteral(verifier))"
                let exists = try await database.query("SELECT 1 FROM pg_roles WHERE rolname = $1", role).count > 0
                do {
                    try await database.query("\(exists ? "ALTER" : "CREATE") ROLE \(quoteIdentifier(role)) \(options)")
                } catch let error as PostgresError where error.sqlState == "42710" {
                    // Made meanwhile by another process provisioning the same cluster.
                    try await database.query("ALTER ROLE \(quoteIdentifier(role)) \(options)")
                }
                // The operator becomes a member so it can hand the schema over (and read it, for
                // `saga`, `dlq` and the chaos ledger).
                try await database.query("GRANT \(quoteIdentifier(role)) TO CURRENT_USER")
                try await database.query("GRANT CONNECT ON DATABASE \(quoteIdentifier(name)) TO \(quoteIdentifier(role))")
                let owner = try await database.query("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema).first?.text(0)
                if owner == nil {
                    try await database.query("CREATE SCHEMA \(quoteIdentifier(schema)) AUTHORIZATION \(quoteIdentifier(role))")
                    report.append("\(service): role \(role) owns the new schema \(schema)")
                } else if owner != role && owner != quoteIdentifier(role) {
                    try await database.query("ALTER SCHEMA \(quoteIdentifier(schema)) OWNER TO \(quoteIdentifier(role))")
                    // A database made before per-service roles: its tables change hands too.
                    for table in try await database.query(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r','p')",
                        schema).compactMap({ $0.text(0) }) {
                        try await database.query("ALTER TABLE \(quoteIdentifier(schema)).\(quoteIdentifier(table)) OWNER TO \(quoteIdentifier(role))")
                    }
                    report.append("\(service): schema \(schema) and its tables handed from \(owner ?? "?") to \(role)")
                } else {
                    report.append("\(service): role \(role) owns schema \(schema)")
                }
                try await database.query("REVOKE ALL ON SCHEMA \(quoteIdentifier(schema)) FROM PUBLIC")
            }
            return report
        }
    }

    /// Both: the broker users on `vhost`, the roles and schemas in the database of `databaseURL`
    /// (an operator's URL).
    public func provision(topology: Topology, vhost: String, management: RabbitManagement, databaseURL: String) async throws {
        _ = try await applyBrokerUsers(topology, vhost: vhost, management: management)
        let database = PostgresClient(configuration: try PostgresConfiguration(url: databaseURL), maximumConnections: 1)
        do {
            _ = try await applyDatabaseRoles(database)
            await database.close()
        } catch {
            await database.close()
            throw error
        }
    }

    /// One provisioning of roles at a time in this process: each waits for the one before it.
    static let roleTurns = Turns()

    actor Turns {
        private var last: Task<Void, Never>?

        func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
            let previous = last
            let mine = Task { () async throws -> T in
                await previous?.value
                return try await body()
            }
            last = Task { _ = await mine.result }
            return try await mine.value
        }
    }
}

/// A string literal for SQL.
func quoteLiteral(_ text: String) -> String { "'" + text.replacing("'", with: "''") + "'" }

/// PostgreSQL's SCRAM-SHA-256 password verifier (RFC 5802, as `pg_authid` stores it), made here
/// so that a password never appears in a statement the server could log.
enum SCRAM {
    static func verifier(password: String, iterations: Int = 4096) -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255, using: &generator) }
        let salted = pbkdf2(password: Array(password.utf8), salt: salt, iterations: iterations)
        let saltedKey = SymmetricKey(data: salted)
        let clientKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Client Key".utf8), using: saltedKey))
        let storedKey = Data(SHA256.hash(data: clientKey))
        let serverKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Server Key".utf8), using: saltedKey))
        return "SCRAM-SHA-256$\(iterations):\(Data(salt).base64EncodedString())$\(storedKey.base64EncodedString()):\(serverKey.base64EncodedString())"
    }

    /// PBKDF2-HMAC-SHA256, one 32-byte block.
    static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var u = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = u
        for _ in 1..<iterations {
            u = Array(HMAC<SHA256>.authenticationCode(for: u, using: key))
            for i in result.indices { result[i] ^= u[i] }
        }
        return result
    }
}
