import ServiceDomains
import AMQPClient
import ArgumentParser
import Auth
import Edge
import FoundationEssentials
import Hummingbird
import Logging
import Messaging
import RedisClient
import ServiceLifecycle
import UnixSignals
import WorkerHost

struct EdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge",
        abstract: "Run the HTTP edge (the /v1 API and /openapi.yaml; /healthz, /readyz and /metrics on the ops port) until SIGTERM.")

    @Option(help: "Public port (default: SHOPFLEET_EDGE_PORT, 8080).") var port: Int?
    @Option(help: "Port of /healthz, /readyz and /metrics (default: SHOPFLEET_HTTP_PORT, 9090).") var opsPort: Int?
    @Option(help: "Address both ports listen on (default: SHOPFLEET_BIND_ADDRESS, 127.0.0.1).") var host: String?
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let config = try connection.configuration()
        let level = Logger.Level(rawValue: config.value(ShopfleetConfiguration.logLevel)) ?? .info
        let registry = WorkerProcess.bootstrap(level: level)
        var logger = Logger(label: "shopfleet.edge")
        logger.logLevel = level
        let tokens = try await ServiceDomains.verifyingTokens(config)
        let openAPIPath = config.value(ShopfleetConfiguration.openAPIFile)
        guard let document = FileManager.default.contents(atPath: openAPIPath) else {
            throw ValidationError("cannot read the OpenAPI document at \(openAPIPath) (SHOPFLEET_OPENAPI_FILE)")
        }
        let amqpConfiguration = try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet edge")
        let amqp = try await WorkerProcess.waitFor("RabbitMQ at \(amqpConfiguration.host):\(amqpConfiguration.port)", logger: logger) {
            try await AMQPConnection.connect(amqpConfiguration, logger: logger)
        }
        let redis = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), maximumConnections: 16)
        var settings = EdgeServer.Settings(openAPIDocument: String(decoding: document, as: UTF8.self))
        settings.rateLimit = Double(try config.integer(ShopfleetConfiguration.edgeRateLimit, in: 1...1_000_000))
        settings.rateBurst = Int(settings.rateLimit * 2)
        settings.queryTimeout = try config.duration(ShopfleetConfiguration.edgeQueryTimeout)
        let vhost = amqpConfiguration.vhost
        settings.redisPrefix = vhost == "/" ? "shopfleet:" : "shopfleet:\(vhost):"
        settings.registrationsPerHour = try config.integer(ShopfleetConfiguration.edgeRegistrationsPerHour, in: 1...1_000_000)
        for entry in config.value(ShopfleetConfiguration.edgeTrustedProxies).split(separator: ",").map({ $0.trimmed() }) where !entry.isEmpty {
            guard let range = IPRange(entry) else {
                throw ValidationError("SHOPFLEET_EDGE_TRUSTED_PROXIES: '\(entry)' is not an address or a CIDR range")
            }
            settings.trustedProxies.append(range)
        }
        let webRoot = config.value(ShopfleetConfiguration.webRoot)
        if webRoot.isEmpty || !FileManager.default.fileExists(atPath: webRoot) {
            logger.notice("no storefront or console: the web root is not there", metadata: ["web_root": .string(webRoot)])
        } else {
            do {
                settings.web = try WebAssets.load(root: webRoot)
            } catch let failure as WebAssets.Failure {
                throw ValidationError("\(failure) (SHOPFLEET_WEB_ROOT=\(webRoot); empty serves no pages)")
            }
        }
        let management = config.value(ShopfleetConfiguration.edgeManagementURL)
        settings.managementURL = management.isEmpty ? nil : management
        let edge = try await EdgeServer(amqp: amqp, redis: redis, tokens: tokens, passwords: PasswordHasher(), settings: settings, logger: logger)
        let listen = try port ?? config.integer(ShopfleetConfiguration.edgePort, in: 0...65535)
        let opsListen = try opsPort ?? config.integer(ShopfleetConfiguration.httpPort, in: 0...65535)
        let address = host ?? config.value(ShopfleetConfiguration.bindAddress)
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: edge.application(host: address, port: listen, registry: registry)),
                       .init(service: edge.ops(host: address, port: opsListen, registry: registry))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
        await amqp.close()
        await redis.close()
    }
}
