public import ArgumentParser
import Cart
import ClientRuntime
import Catalog
import DeadLetters
import Inventory
import Logging
public import Messaging
public import Orders
public import PostgresClient
import RedisClient
import Search

/// A domain: where its tables live, and how to build its worker from the configuration.
public struct WorkerDomain: Sendable {
    public var schema: String
    public var migrations: [Migration]
    /// False for the benchmark's domain: not offered in messages, not migrated by `shopfleet migrate`.
    public var listed: Bool
    public var make: @Sendable (ShopfleetConfiguration) async throws -> WorkerDefinition

    public init(schema: String, migrations: [Migration], listed: Bool = true,
                make: @escaping @Sendable (ShopfleetConfiguration) async throws -> WorkerDefinition) {
        self.schema = schema
        self.migrations = migrations
        self.listed = listed
        self.make = make
    }
}

extension Dictionary where Key == String, Value == WorkerDomain {
    /// The domains offered to people (not the benchmark's), sorted.
    public var listedNames: [String] { filter(\.value.listed).keys.sorted() }

    /// The named domain, or an error that names the ones there are.
    public func domain(named name: String) throws -> WorkerDomain {
        guard let domain = self[name] else {
            throw ValidationError("unknown domain '\(name)'; this build has " + listedNames.joined(separator: ", "))
        }
        return domain
    }
}

/// The domains whose workers need nothing but the runtime and the three servers: no HTTP client,
/// no TLS, no token signing. `shopfleet-worker` is built from these alone, which keeps it small
/// (see `docs/benchmarks.md`, memory); `shopfleet worker <domain>` runs that binary for them.
public enum RuntimeDomains {
    public static let table: [String: WorkerDomain] = [
        "catalog": WorkerDomain(schema: CatalogService.schema, migrations: CatalogService.migrations) { _ in CatalogService.definition() },
        "inventory": WorkerDomain(schema: InventoryService.schema, migrations: InventoryService.migrations) { _ in InventoryService.definition() },
        "search": WorkerDomain(schema: SearchService.schema, migrations: SearchService.migrations) { _ in SearchService.definition() },
        "cart": WorkerDomain(schema: CartService.schema, migrations: CartService.migrations) { config in
            let redis = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), maximumConnections: 8)
            return CartService.definition(.init(redis: redis, lifetime: try config.duration(ShopfleetConfiguration.cartTTL)))
        },
        "orders": WorkerDomain(schema: OrdersService.schema, migrations: OrdersService.migrations) { config in
            OrdersService.definition(timing: try checkoutTiming(config))
        },
        "deadletters": WorkerDomain(schema: DeadLettersService.schema, migrations: DeadLettersService.migrations) { config in
            DeadLettersService.definition(topology: try Topology(contentsOfFile: config.value(ShopfleetConfiguration.topologyFile)),
                                          amqpURL: config.amqpURL)
        },
        BenchDomain.name: WorkerDomain(schema: BenchDomain.schema, migrations: BenchDomain.migrations, listed: false) { _ in
            BenchDomain.definition()
        },
    ]

    public static func checkoutTiming(_ config: ShopfleetConfiguration) throws -> Checkout.Timing {
        var timing = Checkout.Timing()
        timing.resend = try config.duration(ShopfleetConfiguration.checkoutResendAfter)
        timing.resendLimit = try config.duration(ShopfleetConfiguration.checkoutResendLimit)
        guard timing.resend >= .milliseconds(100), timing.resendLimit >= timing.resend else {
            throw ValidationError("SHOPFLEET_CHECKOUT_RESEND_AFTER must be at least 100ms and SHOPFLEET_CHECKOUT_RESEND_LIMIT no shorter")
        }
        timing.reserve = try config.duration(ShopfleetConfiguration.checkoutReserveTimeout)
        timing.payment = try config.duration(ShopfleetConfiguration.checkoutPaymentTimeout)
        timing.step = try config.duration(ShopfleetConfiguration.checkoutStepTimeout)
        timing.reservationTTL = try config.duration(ShopfleetConfiguration.checkoutReservationTTL)
        guard timing.reservationTTL >= .seconds(1) else {
            throw ValidationError("SHOPFLEET_CHECKOUT_RESERVATION_TTL must be at least 1s")
        }
        return timing
    }
}

/// What `shopfleet worker` and `shopfleet-worker` take: a domain, the connection flags, the port.
public struct WorkerArguments: ParsableArguments, Sendable {
    @Argument(help: "The domain to run.")
    public var domain: String
    @OptionGroup public var connection: ConnectionOptions
    @Option(help: "Overrides SHOPFLEET_HTTP_PORT.")
    public var port: Int?

    public init() {}

    /// Runs the domain's worker from `domains` until SIGTERM.
    public func run(domains: [String: WorkerDomain]) async throws {
        let config = try connection.configuration()
        let definition = try await domains.domain(named: domain).make(config)
        guard let level = Logger.Level(rawValue: config.value(ShopfleetConfiguration.logLevel)) else {
            throw ValidationError("SHOPFLEET_LOG_LEVEL '\(config.value(ShopfleetConfiguration.logLevel))' is not a log level")
        }
        var settings = WorkerSettings(
            amqpURL: config.amqpURL, databaseURL: config.databaseURL,
            topologyFile: config.value(ShopfleetConfiguration.topologyFile),
            httpPort: try port ?? config.integer(ShopfleetConfiguration.httpPort, in: 0...65535),
            prefetch: UInt16(try config.integer(ShopfleetConfiguration.workerPrefetch, in: 1...65535)),
            concurrency: try config.integer(ShopfleetConfiguration.workerConcurrency, in: 1...1024),
            logLevel: level)
        settings.bindAddress = config.value(ShopfleetConfiguration.bindAddress)
        settings.batchSize = try config.integer(ShopfleetConfiguration.workerBatch, in: 1...1000)
        let wait = config.value(ShopfleetConfiguration.workerBatchWait)
        settings.batchWait = ["0", "0s", "0ms"].contains(wait) ? .zero : try config.duration(ShopfleetConfiguration.workerBatchWait)
        settings.batchLockTimeout = try config.lockTimeout(ShopfleetConfiguration.workerBatchLockTimeout)
        settings.beforeBatchLockTimeout = try config.lockTimeout(ShopfleetConfiguration.workerBatchFirstLocksTimeout)
        try await WorkerProcess.run(definition, settings: settings)
    }
}

/// The `@main` of a worker executable (`shopfleet-worker`, `shopfleet-worker-ext`): one domain of
/// `domains`, with the arguments of `shopfleet worker`. Usually started as `shopfleet worker
/// <domain>`, which becomes the process; the same arguments and configuration either way.
public protocol WorkerExecutable: AsyncParsableCommand {
    static var domains: [String: WorkerDomain] { get }
    var arguments: WorkerArguments { get }
}

extension WorkerExecutable {
    public static func commandConfiguration(name: String) -> CommandConfiguration {
        CommandConfiguration(
            commandName: name,
            abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.",
            discussion: "The executable behind `shopfleet worker` for: " + domains.listedNames.joined(separator: ", ") + ".")
    }

    /// Watches the parent (`shopfleet dev`) if asked to, then parses the arguments and runs.
    public static func start() async {
        ParentWatch.startIfAsked()
        await main(nil)
    }

    public func run() async throws {
        try await arguments.run(domains: Self.domains)
    }
}
