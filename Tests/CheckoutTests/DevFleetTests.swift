import ClientRuntime
import FoundationEssentials
import Messaging
import PostgresClient
import ShopfleetTesting
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet dev` (what `make run` runs): the whole fleet as children, commands from "another
/// terminal" that need no settings of their own, a child that dies restarted, Ctrl-C stopping all.
@Suite("Local fleet (shopfleet dev)", .serialized)
struct DevFleetTests {
    struct Status: Decodable {
        struct Process: Decodable {
            var role: String
            var pid: Int32
            var state: String
            var restarts: Int
        }
        struct Queue: Decodable {
            var name: String
            var consumers: Int
        }
        var running: Bool
        var processes: [Process]
        var queues: [Queue]
    }

    @Test func runsTheFleetRestartsWhatDiesAndStopsEverythingOnCtrlC() async throws {
        let sandbox = try await BrokerSandbox.create(topologyFile: BrokerSandbox.fleetTopologyFile, apply: false)
        let database = TestServers.uniqueName("devfleet")
        let admin = PostgresClient(configuration: try PostgresConfiguration(url: try TestServers.databaseURL()), maximumConnections: 1)
        try await admin.query("CREATE DATABASE \(quoteIdentifier(database))")
        let base = try TestServers.databaseURL()
        let directory = "/tmp/\(database)"
        let port = TestServers.freePort(count: 12)  // nine workers from port, edge port + 9, sandbox port + 10, SMTP port + 11
        // The fleet's own settings; the "other terminal" gets none of them, only the folder.
        let fleetEnvironment = [
            "SHOPFLEET_DEV_DIR": directory,
            "SHOPFLEET_AMQP_URL": sandbox.amqpURL,
            "SHOPFLEET_DATABASE_URL": String(base[..<base.lastIndex(of: "/")!]) + "/" + database,
            "SHOPFLEET_TOPOLOGY_FILE": BrokerSandbox.fleetTopologyFile,
            "SHOPFLEET_PAYMENTS_URL": "http://127.0.0.1:\(port + 10)",
            "SHOPFLEET_SMTP_URL": "smtp://127.0.0.1:\(port + 11)",
            "SHOPFLEET_WORKER_CONCURRENCY": "2",
            "SHOPFLEET_EDGE_PORT": String(port + 9),
            "SHOPFLEET_OPENAPI_FILE": TestServers.repositoryRoot + "/openapi.yaml",
        ]
        let fleet = try ChildProcess.spawn([CheckoutFleet.binary, "dev", "--products", "20", "--first-port", String(port)],
                                           extraEnvironment: fleetEnvironment, logFile: "\(directory).log")
        let otherTerminal = Dictionary(uniqueKeysWithValues: ["SHOPFLEET_AMQP_URL", "SHOPFLEET_AMQP_MANAGEMENT_URL", "SHOPFLEET_DATABASE_URL",
                                                              "SHOPFLEET_TOPOLOGY_FILE"].map { ($0, "") })
            .merging(["SHOPFLEET_DEV_DIR": directory]) { _, new in new }
        func shopfleet(_ arguments: String...) async throws -> String {
            try await ChildProcess.check([CheckoutFleet.binary] + arguments, extraEnvironment: otherTerminal)
        }
        func status() async throws -> Status {
            try JSONDecoder().decode(Status.self, from: Data(try await shopfleet("dev", "status", "--json").utf8))
        }
        defer {
            fleet.signal(SIGKILL)
            Task {
                await sandbox.remove()
                _ = try? await admin.query("DROP DATABASE IF EXISTS \(quoteIdentifier(database)) WITH (FORCE)")
                await admin.close()
            }
        }
        do {
            // Every process ready, every queue consumed.
            try await waitUntil(deadline: .seconds(90)) {
                guard let status = try? await status() else { return false }
                return status.running && status.processes.count == 12
                    && status.processes.allSatisfy { $0.state == "ready" || ($0.role == "smtp-sink" && $0.state == "running") }
            }
            // The management API samples queues every few seconds: the consumers show up in time.
            try await waitUntil(deadline: .seconds(30)) {
                (try? await status())?.queues.first { $0.name == "orders.saga-events" }?.consumers == 2
            }
            let ready = try await status()

            // A demo order goes through, as seen from the other terminal.
            let order = String(try await shopfleet("dev", "order", "--product", "demo-0003", "--quantity", "1").filter { !$0.isWhitespace })
            try await waitUntil(deadline: .seconds(30)) {
                (try? await shopfleet("saga", "show", order, "--json"))?.contains("\"state\" : \"completed\"") == true
            }
            try await waitUntil(deadline: .seconds(20)) {
                ((try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/mail/new")) ?? []).count == 1
            }

            // A worker killed the hard way is started again.
            let orders = try #require(ready.processes.first { $0.role == "orders" })
            kill(orders.pid, SIGKILL)
            try await waitUntil(deadline: .seconds(60)) {
                guard let process = try? await status().processes.first(where: { $0.role == "orders" }) else { return false }
                return process.restarts == 1 && process.pid != orders.pid && process.state == "ready"
            }

            // Ctrl-C stops every child, then the supervisor.
            let pids = try await status().processes.map(\.pid)
            fleet.signal(SIGINT)
            let exit = try await withDeadline(.seconds(40)) { await fleet.wait() }
            #expect(exit == 0)
            #expect(pids.allSatisfy { kill($0, 0) != 0 }, "a child outlived the supervisor")
        } catch {
            print((try? String(contentsOfFile: "\(directory).log", encoding: .utf8))?.split(separator: "\n").suffix(60).joined(separator: "\n") ?? "")
            throw error
        }
    }
}
