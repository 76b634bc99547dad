import ClientRuntime
public import Messaging
import PostgresClient
public import RabbitManagement

/// A virtual host (with the topology loaded) and a database of their own on shared servers, for
/// one benchmark run, chaos run or test fleet: runs never see each other's queues or tables.
/// ``remove()`` deletes both with everything in them.
public struct FleetSandbox: Sendable {
    public let vhost: String
    public let management: RabbitManagement
    /// The broker URL with the sandbox's vhost (and the query of the URL it was made from).
    public let amqpURL: String
    public let databaseName: String
    public let databaseURL: String
    /// The server's URL the database was created through (to drop it).
    let adminDatabaseURL: String

    /// Creates `<prefix>-<random>` on the broker of `amqpURL` (through `managementURL`) and
    /// `<prefix>_<random>` on the PostgreSQL server of `databaseURL`; with `identities`, each
    /// service's broker user with its rights on the vhost, and each worker's role owning its
    /// schema in the database.
    public static func create(prefix: String, amqpURL: String, managementURL: String, databaseURL: String,
                              topology: Topology, identities: FleetIdentities? = nil) async throws -> FleetSandbox {
        let suffix = String(UInt32.random(in: 0...UInt32.max))
        let vhost = "\(prefix)-\(suffix)"
        let management = try RabbitManagement(url: managementURL)
        try await management.createVirtualHost(vhost, for: try ServerURL(amqpURL, schemes: ["amqp", "amqps"]).user ?? "guest",
                                               loading: topology.render())
        let databaseName = "\(prefix.replacing("-", with: "_"))_\(suffix)"
        let admin = PostgresClient(configuration: try PostgresConfiguration(url: databaseURL), maximumConnections: 1)
        do {
            try await admin.query("CREATE DATABASE \(quoteIdentifier(databaseName))")
            await admin.close()
        } catch {
            await admin.close()
            try? await management.deleteVirtualHost(vhost)
            throw error
        }
        let sandbox = FleetSandbox(vhost: vhost, management: management, amqpURL: RabbitManagement.amqpURL(amqpURL, virtualHost: vhost),
                                   databaseName: databaseName, databaseURL: Self.replacingDatabase(of: databaseURL, with: databaseName),
                                   adminDatabaseURL: databaseURL)
        if let identities {
            do {
                try await identities.provision(topology: topology, vhost: vhost, management: management, databaseURL: sandbox.databaseURL)
            } catch {
                await sandbox.remove()
                throw error
            }
        }
        return sandbox
    }

    /// `postgres://user:password@host:port/<name>?query`.
    static func replacingDatabase(of url: String, with name: String) -> String {
        let query = url.firstIndex(of: "?").map { String(url[$0...]) } ?? ""
        let base = url.firstIndex(of: "?").map { String(url[..<$0]) } ?? url
        let authority = base.firstRange(of: "://").map { $0.upperBound } ?? base.startIndex
        let path = base[authority...].firstIndex(of: "/") ?? base.endIndex
        return String(base[..<path]) + "/" + name + query
    }

    /// Deletes the vhost and drops the database (closing whoever is still connected).
    public func remove() async {
        try? await management.deleteVirtualHost(vhost)
        guard let configuration = try? PostgresConfiguration(url: adminDatabaseURL) else { return }
        let admin = PostgresClient(configuration: configuration, maximumConnections: 1)
        _ = try? await admin.query("DROP DATABASE IF EXISTS \(quoteIdentifier(databaseName)) WITH (FORCE)")
        await admin.close()
    }
}
