import ArgumentParser
import Fleet
import ServiceDomains
import ClientRuntime
import Messaging
import PostgresClient
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// The domains this binary can run as workers, each built from the configuration: the
/// runtime-only ones (`RuntimeDomains`, which `shopfleet-worker` also has) and the three that need
/// more (an HTTP client and TLS for payments and notifications, token signing for identity).
enum WorkerCatalog {
    /// Every worker of the fleet, in the order `shopfleet dev` starts them.
    static let fleet = ["catalog", "inventory", "orders", "payments", "notifications", "search", "identity", "cart", "deadletters"]

    static let domains: [String: WorkerDomain] = RuntimeDomains.table.merging(ServiceDomains.table) { runtime, _ in runtime }

    /// The domains `shopfleet migrate` applies by default (not the benchmark's).
    static var listed: [String] { domains.listedNames }

    /// The small worker executable, built from the runtime-only domains.
    static let slimName = "shopfleet-worker"

    /// `shopfleet-worker` beside this executable, if it is there.
    static var slimExecutable: String? { sibling(slimName) }

    /// The executable a domain's worker runs as, beside this one: `shopfleet-worker` for the
    /// runtime-only domains, `shopfleet-worker-ext` for payments, notifications and identity; nil
    /// when it is not there (the worker then runs in this process).
    static func executable(for domain: String) -> (name: String, path: String)? {
        let name = RuntimeDomains.table[domain] != nil ? slimName
            : ServiceDomains.table[domain] != nil ? ServiceDomains.executableName : nil
        guard let name, let path = sibling(name) else { return nil }
        return (name, path)
    }

    private static func sibling(_ name: String) -> String? {
        guard let me = ChildProcess.currentExecutable, let slash = me.lastIndex(of: "/") else { return nil }
        let path = String(me[...slash]) + name
        return access(path, X_OK) == 0 ? path : nil
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.",
        discussion: """
            catalog, inventory, orders, search, cart and deadletters run as `shopfleet-worker`; \
            payments, notifications and identity as `shopfleet-worker-ext`: the process becomes that \
            smaller executable, found beside this one, with the same arguments and pid (without it, \
            the worker runs in this executable).
            """)

    @OptionGroup var arguments: WorkerArguments

    func run() async throws {
        // `shopfleet worker <domain> …`: the same arguments, after `worker`, go to the smaller executable.
        if let target = WorkerCatalog.executable(for: arguments.domain), CommandLine.arguments.dropFirst().first == "worker" {
            try Self.exec(target.path, arguments: [target.name] + CommandLine.arguments.dropFirst(2))
        }
        try await arguments.run(domains: WorkerCatalog.domains)
    }

    /// Replaces this process with `path`; returns only by throwing.
    static func exec(_ path: String, arguments: [String]) throws -> Never {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv(path, &argv)
        let reason = String(cString: strerror(errno))
        throw ValidationError("cannot run \(path): \(reason)")
    }
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Make each worker's database role and the schema it owns (with SHOPFLEET_FLEET_SECRET), then apply each domain's migrations (the runtime's inbox and outbox, then the domain's own) to its schema as its owner.")

    @Argument(help: "Domains to migrate (default: all).")
    var domains: [String] = []
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let config = try connection.configuration()
        let secret = config.value(ShopfleetConfiguration.fleetSecret)
        if !secret.isEmpty {
            for line in try await Self.provision(secret: secret, databaseURL: config.databaseURL) { print(line) }
        }
        let report = try await Self.migrate(domains.isEmpty ? WorkerCatalog.listed : domains, databaseURL: config.databaseURL)
        for line in report { print(line) }
    }
}

extension MigrateCommand {
    /// Each worker's login role and the schema it owns (``FleetIdentities/applyDatabaseRoles(_:)``),
    /// as the operator's database identity.
    static func provision(secret: String, databaseURL: String) async throws -> [String] {
        let identities: FleetIdentities
        do { identities = try FleetIdentities(secret: secret) } catch { throw ValidationError("\(error)") }
        let client = PostgresClient(configuration: try PostgresConfiguration(url: databaseURL), maximumConnections: 1)
        do {
            let report = try await identities.applyDatabaseRoles(client)
            await client.close()
            return report
        } catch {
            await client.close()
            throw error
        }
    }

    /// Migrates each domain's schema; a line per domain saying what was applied.
    static func migrate(_ names: [String], databaseURL: String) async throws -> [String] {
        let client = PostgresClient(configuration: try PostgresConfiguration(url: databaseURL), maximumConnections: 1)
        defer { Task { await client.close() } }
        var report: [String] = []
        for name in names {
            let domain = try WorkerCatalog.domains.domain(named: name)
            let applied = try await Migrator(client: client, schema: domain.schema).migrate(try RuntimeMigrations.with(domain.migrations))
            report.append("\(name): schema \(domain.schema): " + (applied.isEmpty ? "up to date" : "applied \(applied.map(String.init).joined(separator: ", "))"))
        }
        return report
    }
}
