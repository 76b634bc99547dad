public import FoundationEssentials

/// One schema change: a SQL file `NNNN_description.sql`, applied once, in version order.
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// FNV-1a of the SQL: a changed file after it was applied is an error, not a silent skip.
    public var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sql.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Reads `NNNN_name.sql` files from a folder, ordered by version. Other files are ignored; two
    /// files with one version are an error.
    public static func load(directory: String) throws -> [Migration] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw PostgresError(.migration, "cannot read migrations folder \(directory): \(error)", host: "", port: 0)
        }
        var migrations: [Migration] = []
        for file in files where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]) else {
                throw PostgresError(.migration, "migration file \(file) is not named NNNN_description.sql", host: "", port: 0)
            }
            guard let data = FileManager.default.contents(atPath: directory + "/" + file) else {
                throw PostgresError(.migration, "cannot read \(directory)/\(file)", host: "", port: 0)
            }
            migrations.append(Migration(version: version, name: String(stem[stem.index(after: underscore)...]),
                                        sql: String(decoding: data, as: UTF8.self)))
        }
        return try ordered(migrations)
    }

    static func ordered(_ migrations: [Migration]) throws -> [Migration] {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.version == b.version {
            throw PostgresError(.migration, "two migrations have version \(a.version): \(a.name), \(b.name)", host: "", port: 0)
        }
        return sorted
    }
}

/// Applies a service's migrations to its schema. Each migration runs in one transaction together
/// with its row in `<schema>.schema_migrations`; a transaction-scoped advisory lock per schema makes
/// two processes starting at once apply each migration exactly once (the second waits, then sees
/// the row and skips).
public struct Migrator: Sendable {
    public var client: PostgresClient
    public var schema: String

    public init(client: PostgresClient, schema: String) {
        self.client = client
        self.schema = schema
    }

    /// Applies what is missing; returns the versions applied now.
    @discardableResult
    public func migrate(_ migrations: [Migration]) async throws -> [Int] {
        let migrations = try Migration.ordered(migrations)
        let table = "\(quoteIdentifier(schema)).schema_migrations"
        let lockKey = "shopfleet.migrate.\(schema)"
        // Schema and bookkeeping table, under the same lock as the migrations themselves.
        try await client.transaction { tx in
            try await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey])
            try await actAsOwner(tx)
            try await tx.simpleQuery("""
                CREATE TABLE IF NOT EXISTS \(table) (
                    version bigint PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                );
                """)
        }
        var applied: [Int] = []
        for migration in migrations {
            let didApply = try await client.transaction { tx -> Bool in
                try await tx.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey])
                try await actAsOwner(tx)
                let existing = try await tx.query("SELECT checksum FROM \(table) WHERE version = $1", [migration.version])
                if let row = existing.first {
                    let checksum = try row.decode(String.self, 0)
                    guard checksum == migration.checksum else {
                        throw PostgresError(
                            .migration,
                            "migration \(migration.version)_\(migration.name) of schema \(schema) was changed after it was applied (checksum \(checksum), file \(migration.checksum)); add a new migration instead",
                            host: client.configuration.host, port: client.configuration.port)
                    }
                    return false
                }
                try await tx.simpleQuery("SET LOCAL search_path TO \(quoteIdentifier(schema)), public")
                try await tx.simpleQuery(migration.sql)
                try await tx.query("INSERT INTO \(table) (version, name, checksum) VALUES ($1, $2, $3)",
                                   [migration.version, migration.name, migration.checksum])
                return true
            }
            if didApply { applied.append(migration.version) }
        }
        return applied
    }

    /// Makes the schema if it is missing (which needs the right to create schemas); where it is
    /// there and owned by a role this connection is a member of but is not (the migrations
    /// identity migrating a service's schema), acts as that role for the rest of the
    /// transaction, so what the migration creates belongs to the schema's owner.
    func actAsOwner(_ tx: PostgresConnection) async throws {
        let rows = try await tx.query(
            "SELECT r.rolname, r.rolname = current_user, pg_has_role(r.oid, 'MEMBER') FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = $1",
            [schema])
        guard let row = rows.first else {
            try await tx.simpleQuery("CREATE SCHEMA \(quoteIdentifier(schema))")
            return
        }
        if row.text(1) != "t", row.text(2) == "t", let owner = row.text(0) {
            try await tx.simpleQuery("SET LOCAL ROLE \(quoteIdentifier(owner))")
        }
    }

    /// Versions recorded as applied, in order.
    public func appliedVersions() async throws -> [Int] {
        let rows = try await client.query(
            "SELECT version FROM \(quoteIdentifier(schema)).schema_migrations ORDER BY version")
        return try rows.map { try $0.decode(Int.self, 0) }
    }
}
