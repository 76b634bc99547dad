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

    /// The repository's root folder (this file is `Sources/ShopfleetTesting/ShopfleetTesting.swift`).
    public static let repositoryRoot: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }()

    /// A port nothing listens on, below Linux's ephemeral range (32768 and up), so that no outgoing
    /// connection takes it between this check and the child process binding it. `count` ports in a
    /// row when a process wants consecutive ones.
    public static func freePort(count: Int = 1) -> Int {
        while true {
            let first = Int.random(in: 20_000...(32_000 - count))
            if (first..<(first + count)).allSatisfy(isFree) { return first }
        }
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = INADDR_ANY
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A unique name for a test's queues, tables and keys.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
    }
}

