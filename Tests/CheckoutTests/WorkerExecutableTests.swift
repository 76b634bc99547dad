import ClientRuntime
import FoundationEssentials
import ShopfleetTesting
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet worker <domain>` for a domain that needs only the runtime becomes `shopfleet-worker`
/// (same pid, same arguments); payments, notifications and identity become `shopfleet-worker-ext`.
/// The fleet tests then run every worker through this path against real servers.
@Suite("shopfleet worker, shopfleet-worker and shopfleet-worker-ext")
struct WorkerExecutableTests {
    /// Its argv, from /proc.
    static func arguments(of pid: pid_t) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    static func read(_ path: String) -> String {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    /// Servers that are not there: each worker, once running, logs that it waits for PostgreSQL.
    static let environment = [
        "SHOPFLEET_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
        "SHOPFLEET_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F",
        "SHOPFLEET_TOPOLOGY_FILE": BrokerSandbox.fleetTopologyFile,
        "SHOPFLEET_PAYMENTS_API_KEY": "sk_test_exec",
        "SHOPFLEET_JWT_SIGNING_KEY": CheckoutFleet.signingKey,
        "SHOPFLEET_ENV_FILE": "/nonexistent/shopfleet.env",
    ]

    @Test(arguments: [("catalog", "shopfleet-worker"), ("orders", "shopfleet-worker"), ("deadletters", "shopfleet-worker"),
                      ("payments", "shopfleet-worker-ext"), ("identity", "shopfleet-worker-ext")])
    func eachDomainRunsInItsExecutable(domain: String, expected: String) async throws {
        let log = "/tmp/shopfleet-exec-\(getpid())-\(domain)-\(UInt32.random(in: 0...UInt32.max)).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess.spawn([CheckoutFleet.binary, "worker", domain, "--port", "0"],
                                             extraEnvironment: Self.environment, logFile: log)
        defer { process.signal(SIGKILL) }
        try await waitUntil(deadline: .seconds(30)) { Self.read(log).contains("waiting for PostgreSQL at 127.0.0.1:1") }
        let exe = try #require(ChildProcess.executable(of: process.pid))
        #expect(exe.hasSuffix("/" + expected), "\(domain) runs \(exe)")
        let argv = Self.arguments(of: process.pid)
        #expect(Array(argv.dropFirst()) == [domain, "--port", "0"], "argv: \(argv)")
        #expect(Self.read(log).contains("\"service\":\"\(domain)\""))
        process.signal(SIGTERM)
        _ = try await withDeadline(.seconds(20)) { await process.wait() }
    }

    @Test func anUnknownDomainIsNamedWithTheOnesThereAre() async throws {
        let cases = [([CheckoutFleet.binary, "worker", "nosuch"], "cart, catalog, deadletters, identity"),
                     ([CheckoutFleet.binary + "-worker", "payments"], "cart, catalog, deadletters"),
                     ([CheckoutFleet.binary + "-worker-ext", "catalog"], "identity, notifications, payments")]
        for (argv, offered) in cases {
            let log = "/tmp/shopfleet-exec-\(getpid())-unknown-\(UInt32.random(in: 0...UInt32.max)).log"
            defer { try? FileManager.default.removeItem(atPath: log) }
            let process = try ChildProcess.spawn(argv, extraEnvironment: Self.environment, logFile: log)
            let status = try await withDeadline(.seconds(20)) { await process.wait() }
            #expect(status != 0)
            let text = Self.read(log)
            #expect(text.contains("unknown domain '\(argv[argv.count - 1])'"), "\(text)")
            #expect(text.contains(offered), "\(text)")
            // The benchmark's domain is not offered.
            #expect(!text.contains("bench"), "\(text)")
        }
    }
}
