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
import WorkerHost

struct EdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge",
        abstract: "Run the HTTP edge (the /v1 API, /openapi.yaml, /healthz, /readyz, /metrics) until SIGTERM.")

    @Option(help: "Port (default: SHOPFLEET_EDGE_PORT, 8080).") var port: Int?
    @Option(help: "Address to listen on.") var host = "0.0.0.0"
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let config = try connection.configuration()
        let level = Logger.Level(rawValue: config.value(ShopfleetConfiguration.logLevel)) ?? .info
        let registry = WorkerProcess.bootstrap(level: level)
        var logger = Logger(label: "shopfleet.edge")
        logger.logLevel = level
        let tokens = try await ServiceDomains.accessTokens(config)
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
        let edge = try await EdgeServer(amqp: amqp, redis: redis, tokens: tokens, passwords: PasswordHasher(), settings: settings, logger: logger)
        let listen = try port ?? config.integer(ShopfleetConfiguration.edgePort, in: 0...65535)
        try await edge.application(host: host, port: listen, registry: registry).runService()
        await amqp.close()
        await redis.close()
    }
}
