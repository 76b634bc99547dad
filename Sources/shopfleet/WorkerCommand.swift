import ArgumentParser
import Auth
import Cart
import Catalog
import DeadLetters
import Identity
import Inventory
import Logging
import Messaging
import Notifications
import Orders
import Payments
import PostgresClient
import RedisClient
import Search

/// The domains this binary can run as workers, each built from the configuration.
enum WorkerCatalog {
    /// Every worker of the fleet, in the order `shopfleet dev` starts them.
    static let fleet = ["catalog", "inventory", "orders", "payments", "notifications", "search", "identity", "cart", "deadletters"]

    /// A domain: where its tables live, and how to build its worker from the configuration.
    struct Domain: Sendable {
        var schema: String
        var migrations: [Migration]
        var make: @Sendable (ShopfleetConfiguration) async throws -> WorkerDefinition
    }

    static let domains: [String: Domain] = [
        "catalog": Domain(schema: CatalogService.schema, migrations: CatalogService.migrations) { _ in CatalogService.definition() },
        "inventory": Domain(schema: InventoryService.schema, migrations: InventoryService.migrations) { _ in InventoryService.definition() },
        "search": Domain(schema: SearchService.schema, migrations: SearchService.migrations) { _ in SearchService.definition() },
        "identity": Domain(schema: IdentityService.schema, migrations: IdentityService.migrations) { config in try await identity(config) },
        "cart": Domain(schema: CartService.schema, migrations: []) { config in
            let redis = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), maximumConnections: 8)
            return CartService.definition(.init(redis: redis, lifetime: try config.duration(ShopfleetConfiguration.cartTTL)))
        },
        "notifications": Domain(schema: NotificationsService.schema, migrations: NotificationsService.migrations) { config in
            try notifications(config)
        },
        "orders": Domain(schema: OrdersService.schema, migrations: OrdersService.migrations) { config in
            OrdersService.definition(timing: try checkoutTiming(config))
        },
        "deadletters": Domain(schema: DeadLettersService.schema, migrations: DeadLettersService.migrations) { config in
            DeadLettersService.definition(topology: try Topology(contentsOfFile: config.value(ShopfleetConfiguration.topologyFile)))
        },
        "payments": Domain(schema: PaymentsService.schema, migrations: PaymentsService.migrations) { config in
            let key = config.value(ShopfleetConfiguration.paymentsAPIKey)
            guard !key.isEmpty else {
                throw ValidationError("the payments worker needs SHOPFLEET_PAYMENTS_API_KEY (or SHOPFLEET_PAYMENTS_API_KEY_FILE), the gateway's secret key")
            }
            return PaymentsService.definition(gateway: PaymentGateway(configuration: .init(
                baseURL: config.value(ShopfleetConfiguration.paymentsURL), apiKey: key)))
        },
    ]

    static func notifications(_ config: ShopfleetConfiguration) throws -> WorkerDefinition {
        let webhook = config.value(ShopfleetConfiguration.webhookURL)
        let secret = config.value(ShopfleetConfiguration.webhookSecret)
        if !webhook.isEmpty, secret.isEmpty {
            throw ValidationError("SHOPFLEET_WEBHOOK_URL is set but SHOPFLEET_WEBHOOK_SECRET is not: webhook calls must be signed")
        }
        let smtp: SMTPClient
        do {
            smtp = try SMTPClient(url: config.value(ShopfleetConfiguration.smtpURL))
        } catch {
            throw ValidationError("SHOPFLEET_SMTP_URL: \(error)")
        }
        return NotificationsService.definition(.init(smtp: smtp, from: config.value(ShopfleetConfiguration.mailFrom),
                                                     webhookURL: webhook.isEmpty ? nil : webhook, webhookSecret: secret))
    }

    static func definition(_ name: String, configuration: ShopfleetConfiguration) async throws -> WorkerDefinition {
        guard let domain = domains[name] else {
            throw ValidationError("unknown domain '\(name)'; this build has " + domains.keys.sorted().joined(separator: ", "))
        }
        return try await domain.make(configuration)
    }

    /// The access tokens of identity (signing) and the edge (verifying).
    static func accessTokens(_ config: ShopfleetConfiguration) async throws -> AccessTokens {
        let secret = config.value(ShopfleetConfiguration.jwtSecret)
        guard !secret.isEmpty else {
            throw ValidationError("SHOPFLEET_JWT_SECRET (or SHOPFLEET_JWT_SECRET_FILE) is not set: the key access tokens are signed with")
        }
        do {
            return try await AccessTokens(secret: secret, lifetime: try config.duration(ShopfleetConfiguration.accessTokenTTL))
        } catch let invalid as AccessTokens.Invalid {
            throw ValidationError(invalid.description)
        }
    }

    static func identity(_ config: ShopfleetConfiguration) async throws -> WorkerDefinition {
        let admins = config.value(ShopfleetConfiguration.adminEmails).split(separator: ",").map { String($0.trimmed()) }.filter { !$0.isEmpty }
        return IdentityService.definition(.init(tokens: try await accessTokens(config), adminEmails: Set(admins)))
    }

    static func checkoutTiming(_ config: ShopfleetConfiguration) throws -> Checkout.Timing {
        var timing = Checkout.Timing()
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
        let config = try connection.configuration()
        let definition = try await WorkerCatalog.definition(domain, configuration: config)
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
        let report = try await Self.migrate(domains.isEmpty ? WorkerCatalog.domains.keys.sorted() : domains,
                                             databaseURL: try connection.configuration().databaseURL)
        for line in report { print(line) }
    }
}

extension MigrateCommand {
    /// Migrates each domain's schema; a line per domain saying what was applied.
    static func migrate(_ names: [String], databaseURL: String) async throws -> [String] {
        let client = PostgresClient(configuration: try PostgresConfiguration(url: databaseURL), maximumConnections: 1)
        defer { Task { await client.close() } }
        var report: [String] = []
        for name in names {
            guard let domain = WorkerCatalog.domains[name] else {
                throw ValidationError("unknown domain '\(name)'; this build has " + WorkerCatalog.domains.keys.sorted().joined(separator: ", "))
            }
            let applied = try await Migrator(client: client, schema: domain.schema).migrate(try RuntimeMigrations.with(domain.migrations))
            report.append("\(name): schema \(domain.schema): " + (applied.isEmpty ? "up to date" : "applied \(applied.map(String.init).joined(separator: ", "))"))
        }
        return report
    }
}
