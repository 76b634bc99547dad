import ArgumentParser
import Auth
import ClientRuntime
import Identity
import Messaging
import Notifications
import Payments
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

    static let domains: [String: WorkerDomain] = RuntimeDomains.table.merging([
        "identity": WorkerDomain(schema: IdentityService.schema, migrations: IdentityService.migrations) { config in try await identity(config) },
        "notifications": WorkerDomain(schema: NotificationsService.schema, migrations: NotificationsService.migrations) { config in
            try notifications(config)
        },
        "payments": WorkerDomain(schema: PaymentsService.schema, migrations: PaymentsService.migrations) { config in
            let key = config.value(ShopfleetConfiguration.paymentsAPIKey)
            guard !key.isEmpty else {
                throw ValidationError("the payments worker needs SHOPFLEET_PAYMENTS_API_KEY (or SHOPFLEET_PAYMENTS_API_KEY_FILE), the gateway's secret key")
            }
            return PaymentsService.definition(gateway: PaymentGateway(configuration: .init(
                baseURL: config.value(ShopfleetConfiguration.paymentsURL), apiKey: key)))
        },
    ]) { runtime, _ in runtime }

    /// The domains `shopfleet migrate` applies by default (not the benchmark's).
    static var listed: [String] { domains.listedNames }

    /// The small worker executable, built from the runtime-only domains.
    static let slimName = "shopfleet-worker"

    /// `shopfleet-worker` beside this executable, if it is there.
    static var slimExecutable: String? {
        guard let me = ChildProcess.currentExecutable, let slash = me.lastIndex(of: "/") else { return nil }
        let path = String(me[...slash]) + slimName
        return access(path, X_OK) == 0 ? path : nil
    }

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
}

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.",
        discussion: """
            catalog, inventory, orders, search, cart and deadletters run as `shopfleet-worker` (the \
            process becomes that smaller executable, found beside this one, with the same arguments \
            and pid); payments, notifications and identity run in this executable.
            """)

    @OptionGroup var arguments: WorkerArguments

    func run() async throws {
        // `shopfleet worker <domain> …`: the same arguments, after `worker`, go to the small executable.
        if RuntimeDomains.table[arguments.domain] != nil, let slim = WorkerCatalog.slimExecutable,
           CommandLine.arguments.dropFirst().first == "worker" {
            try Self.exec(slim, arguments: [WorkerCatalog.slimName] + CommandLine.arguments.dropFirst(2))
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
        abstract: "Apply each domain's migrations (the runtime's inbox and outbox, then the domain's own) to its schema.")

    @Argument(help: "Domains to migrate (default: all).")
    var domains: [String] = []
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let report = try await Self.migrate(domains.isEmpty ? WorkerCatalog.listed : domains,
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
            let domain = try WorkerCatalog.domains.domain(named: name)
            let applied = try await Migrator(client: client, schema: domain.schema).migrate(try RuntimeMigrations.with(domain.migrations))
            report.append("\(name): schema \(domain.schema): " + (applied.isEmpty ? "up to date" : "applied \(applied.map(String.init).joined(separator: ", "))"))
        }
        return report
    }
}
