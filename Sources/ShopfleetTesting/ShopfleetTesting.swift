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
        let status = try await run(["/bin/bash", script, action, instance])
        guard status == 0 else { throw ProcessFailed(command: "servers.sh \(action)", status: status) }
    }

    /// A unique name for a test's queues, tables and keys.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
    }
}

public struct ProcessFailed: Error, CustomStringConvertible {
    public var command: String
    public var status: Int32
    public var description: String { "\(command) exited with status \(status)" }
}

/// Spawns `argv` and waits for it on a thread of its own (waitpid blocks), returning its exit status.
public func run(_ argv: [String]) async throws -> Int32 {
    let waiter = ConnectionThread(name: "wait \(argv.first ?? "")")
    defer { waiter.stop() }
    return try await waiter.submit {
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        let rc = posix_spawn(&pid, argv[0], nil, nil, cArgs, environ)
        guard rc == 0 else { throw ProcessFailed(command: argv.joined(separator: " "), status: rc) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS by hand: the macros do not import.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
