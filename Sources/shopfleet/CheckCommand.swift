import AMQPClient
import ArgumentParser
import ClientRuntime
import PostgresClient
import RedisClient
import WorkerHost

/// Connects to each server the configuration names and says what answered. Exit status 1 when
/// any did not.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Connect to RabbitMQ, PostgreSQL and Redis and report each.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let config = try connection.configuration()
        var failures = 0
        func report(_ name: String, _ body: () async throws -> String) async {
            let start = ContinuousClock.now
            do {
                let detail = try await body()
                print("ok    \(name): \(detail) (\(ContinuousClock.now - start))")
            } catch {
                failures += 1
                print("FAIL  \(name): \(error)")
            }
        }
        await report("RabbitMQ") {
            let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet check"))
            await amqp.close()
            return ServerURL.redact(config.amqpURL)
        }
        await report("PostgreSQL") {
            let pg = try await PostgresConnection.connect(try PostgresConfiguration(url: config.databaseURL))
            let version = try await pg.query("SHOW server_version").first?.decode(String.self, 0) ?? "?"
            await pg.close()
            return "\(ServerURL.redact(config.databaseURL)), server \(version)"
        }
        await report("Redis") {
            let redis = try await RedisConnection.connect(try RedisConfiguration(url: config.redisURL))
            try await redis.send("PING")
            await redis.close()
            return ServerURL.redact(config.redisURL)
        }
        if failures > 0 { throw ExitCode(1) }
    }
}
