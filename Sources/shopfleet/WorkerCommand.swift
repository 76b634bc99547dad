import ArgumentParser
import Logging
import Messaging
import PostgresClient

/// The domains this binary can run as workers. Each domain target contributes a
/// `WorkerDefinition`; the checkout issue adds catalog, inventory, orders, payments and
/// notifications here.
enum WorkerCatalog {
    static let domains: [String: @Sendable () -> WorkerDefinition] = [:]

    static func definition(_ name: String) throws -> WorkerDefinition {
        guard let make = domains[name] else {
            let known = domains.keys.sorted()
            throw ValidationError("unknown domain '\(name)'; this build has " + (known.isEmpty ? "no domains yet" : known.joined(separator: ", ")))
        }
        return make()
    }
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.")

    @Argument(help: "The domain to run.")
    var domain: String
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Overrides SHOPFLEET_HTTP_PORT.")
    var port: Int?

    func run() async throws {
        let definition = try WorkerCatalog.definition(domain)
        let config = try connection.configuration()
        guard let level = Logger.Level(rawValue: config.value(ShopfleetConfiguration.logLevel)) else {
            throw ValidationError("SHOPFLEET_LOG_LEVEL '\(config.value(ShopfleetConfiguration.logLevel))' is not a log level")
        }
        let settings = WorkerSettings(
            amqpURL: config.amqpURL, databaseURL: config.databaseURL,
            topologyFile: config.value(ShopfleetConfiguration.topologyFile),
            httpPort: try port ?? config.integer(ShopfleetConfiguration.httpPort, in: 0...65535),
            prefetch: UInt16(try config.integer(ShopfleetConfiguration.workerPrefetch, in: 1...65535)),
            concurrency: try config.integer(ShopfleetConfiguration.workerConcurrency, in: 1...1024),
            logLevel: level)
        try await WorkerProcess.run(definition, settings: settings)
    }
}

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply each domain's migrations (the runtime's inbox and outbox, then the domain's own) to its schema.")

    @Argument(help: "Domains to migrate (default: all).")
    var domains: [String] = []
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let names = domains.isEmpty ? WorkerCatalog.domains.keys.sorted() : domains
        if names.isEmpty {
            print("no domains in this build: nothing to migrate")
            return
        }
        let client = PostgresClient(configuration: try PostgresConfiguration(url: try connection.configuration().databaseURL), maximumConnections: 1)
        defer { Task { await client.close() } }
        for name in names {
            let definition = try WorkerCatalog.definition(name)
            let applied = try await Migrator(client: client, schema: definition.schema)
                .migrate(try RuntimeMigrations.with(definition.migrations))
            print("\(name): schema \(definition.schema): " + (applied.isEmpty ? "up to date" : "applied \(applied.map(String.init).joined(separator: ", "))"))
        }
    }
}
