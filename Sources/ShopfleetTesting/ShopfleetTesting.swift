public import ClientRuntime
#if canImport(Glibc)
import Glibc
#endif

/// What the integration tests share: the servers' URLs from the environment `make test` sets up,
/// unique names, and stopping/starting a test server for fault tests.
public enum TestServers {
    public struct Missing: Error, CustomStringConvertible {
        public var variable: String
        public var description: String {
            "\(variable) is not set: run the tests with `make test`, which starts the test servers"
        }
    }

    public static func environment(_ name: String) throws -> String {
        guard let value = getenv(name) else { throw Missing(variable: name) }
        return String(cString: value)
    }

    public static func amqpURL() throws -> String { try environment("SHOPFLEET_AMQP_URL") }
    public static func managementURL() throws -> String { try environment("SHOPFLEET_AMQP_MANAGEMENT_URL") }
    public static func databaseURL() throws -> String { try environment("SHOPFLEET_DATABASE_URL") }
    public static func redisURL() throws -> String { try environment("SHOPFLEET_REDIS_URL") }

    /// Runs `scripts/servers.sh <action> <instance>`, e.g. `down-redis`, `up-rabbitmq`.
    public static func control(_ action: String) async throws {
        let script = try environment("SHOPFLEET_SERVERS_SCRIPT")
        let instance = try environment("SHOPFLEET_SERVERS_INSTANCE")
        try await ChildProcess.check(["/bin/bash", script, action, instance])
    }

    /// Stops `server` (`rabbitmq`, `postgres` or `redis`), runs `body`, and starts it again
    /// whether `body` returned or threw: a failing test never leaves a server down for the next.
    public static func whileDown<T>(_ server: String, _ body: () async throws -> T) async throws -> T {
        try await control("down-\(server)")
        let result: T
        do {
            result = try await body()
        } catch {
            try? await control("up-\(server)")
            throw error
        }
        try await control("up-\(server)")
        return result
    }

    /// The repository's root folder (this file is `Sources/ShopfleetTesting/ShopfleetTesting.swift`).
    public static let repositoryRoot: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }()

    /// A free port below the ephemeral range (`LocalPort.free`); `count` consecutive ones.
    public static func freePort(count: Int = 1) -> Int { LocalPort.free(count: count) }

    /// A unique name for a test's queues, tables and keys.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
    }
}

