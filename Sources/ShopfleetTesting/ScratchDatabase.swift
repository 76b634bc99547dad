public import PostgresClient

/// A database of its own for one test (or one test fleet), on the test server; dropped with
/// everything in it (and whoever is still connected) by `drop()`.
public struct ScratchDatabase: Sendable {
    public let name: String
    public let url: String

    public static func create(_ prefix: String) async throws -> ScratchDatabase {
        let name = TestServers.uniqueName(prefix)
        let base = try TestServers.databaseURL()
        let admin = PostgresClient(configuration: try PostgresConfiguration(url: base), maximumConnections: 1)
        do {
            try await admin.query("CREATE DATABASE \(quoteIdentifier(name))")
            await admin.close()
        } catch {
            await admin.close()
            throw error
        }
        return ScratchDatabase(name: name, url: String(base[..<base.lastIndex(of: "/")!]) + "/" + name)
    }

    public func drop() async {
        guard let base = try? TestServers.databaseURL(), let configuration = try? PostgresConfiguration(url: base) else { return }
        let admin = PostgresClient(configuration: configuration, maximumConnections: 1)
        _ = try? await admin.query("DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)")
        await admin.close()
    }
}
