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
            var name: String
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

    /// `shopfleet dev` started as "the first terminal", with a vhost and a database of its own.
    final class DevFleet: Sendable {
        let sandbox: BrokerSandbox
        let scratch: ScratchDatabase
        let directory: String
        let process: RunningProcess

        init() async throws {
            sandbox = try await BrokerSandbox.create(topologyFile: BrokerSandbox.fleetTopologyFile, apply: false)
            scratch = try await ScratchDatabase.create("devfleet")
            directory = "/tmp/\(scratch.name)"
            // Ten workers from port (two orders replicas), edge port + 10, sandbox port + 11, SMTP port + 12, the edge's ops port + 13.
            let port = TestServers.freePort(count: 14)
            // The fleet's own settings; the "other terminal" gets none of them, only the folder.
            let environment = [
                "SHOPFLEET_DEV_DIR": directory,
                "SHOPFLEET_AMQP_URL": sandbox.amqpURL,
                "SHOPFLEET_DATABASE_URL": scratch.url,
                "SHOPFLEET_TOPOLOGY_FILE": BrokerSandbox.fleetTopologyFile,
                "SHOPFLEET_PAYMENTS_URL": "http://127.0.0.1:\(port + 11)",
                "SHOPFLEET_SMTP_URL": "smtp://127.0.0.1:\(port + 12)",
                "SHOPFLEET_WORKER_CONCURRENCY": "2",
                "SHOPFLEET_EDGE_PORT": String(port + 10),
                "SHOPFLEET_OPENAPI_FILE": TestServers.repositoryRoot + "/openapi.yaml",
            ]
            process = try ChildProcess.spawn([CheckoutFleet.binary, "dev", "--products", "20", "--first-port", String(port), "--edge-ops-port", String(port + 13), "--replicas", "orders=2"],
                                             extraEnvironment: environment, logFile: "\(directory).log")
        }

        /// `shopfleet <arguments>` from another terminal in the same folder: no settings but the folder.
        func shopfleet(_ arguments: String...) async throws -> String {
            let otherTerminal = Dictionary(uniqueKeysWithValues: ["SHOPFLEET_AMQP_URL", "SHOPFLEET_AMQP_MANAGEMENT_URL", "SHOPFLEET_DATABASE_URL",
                                                                  "SHOPFLEET_TOPOLOGY_FILE"].map { ($0, "") })
                .merging(["SHOPFLEET_DEV_DIR": directory]) { _, new in new }
            return try await ChildProcess.check([CheckoutFleet.binary] + arguments, extraEnvironment: otherTerminal)
        }

        func status() async throws -> Status {
            try JSONDecoder().decode(Status.self, from: Data(try await shopfleet("dev", "status", "--json").utf8))
        }

        /// Waits until every process is ready (the SMTP sink has no health check: running).
        func waitReady() async throws {
            try await waitUntil(deadline: .seconds(90)) { [self] in
                guard let status = try? await status() else { return false }
                return status.running && status.processes.count == 13
                    && status.processes.allSatisfy { $0.state == "ready" || ($0.role == "smtp-sink" && $0.state == "running") }
            }
        }

        var log: String {
            (try? String(contentsOfFile: "\(directory).log", encoding: .utf8))?.split(separator: "\n").suffix(60).joined(separator: "\n") ?? ""
        }

        /// Kills the supervisor and whatever children are left, drops the vhost and the database.
        func remove(children: [Int32]) async {
            process.signal(SIGKILL)
            for pid in children { kill(pid, SIGKILL) }
            _ = await process.wait()
            await sandbox.remove()
            await scratch.drop()
        }
    }

    @Test func runsTheFleetRestartsWhatDiesAndStopsEverythingOnCtrlC() async throws {
        let dev = try await DevFleet()
        var children: [Int32] = []
        do {
            // Every process ready, every queue consumed; orders twice, each replica a process of its own.
            try await dev.waitReady()
            children = try await dev.status().processes.map(\.pid)
            #expect(try await dev.status().processes.filter { $0.role == "orders" }.map(\.name) == ["orders-1", "orders-2"])
            // The management API samples queues every few seconds: the consumers show up in time.
            // Two replicas, two consumers each.
            try await waitUntil(deadline: .seconds(30)) {
                (try? await dev.status())?.queues.first { $0.name == "orders.saga-events" }?.consumers == 4
            }

            // A demo order goes through, as seen from the other terminal.
            let order = String(try await dev.shopfleet("dev", "order", "--product", "demo-0003", "--quantity", "1").filter { !$0.isWhitespace })
            try await waitUntil(deadline: .seconds(30)) {
                (try? await dev.shopfleet("saga", "show", order, "--json"))?.contains("\"state\" : \"completed\"") == true
            }
            try await waitUntil(deadline: .seconds(20)) {
                ((try? FileManager.default.contentsOfDirectory(atPath: "\(dev.directory)/mail/new")) ?? []).count == 1
            }

            // A worker killed the hard way is started again, again and again, without backing off.
            for round in 1...3 {
                let orders = try #require(try await dev.status().processes.first { $0.name == "orders-2" })
                kill(orders.pid, SIGKILL)
                try await waitUntil(deadline: .seconds(30)) {
                    guard let process = try? await dev.status().processes.first(where: { $0.name == "orders-2" }) else { return false }
                    return process.restarts == round && process.pid != orders.pid && process.state == "ready"
                }
            }
            let log = (try? String(contentsOfFile: "\(dev.directory).log", encoding: .utf8)) ?? ""
            #expect(log.ranges(of: "restarting orders-2 in 0.25 seconds").count == 3)

            // Ctrl-C stops every child, then the supervisor.
            children = try await dev.status().processes.map(\.pid)
            dev.process.signal(SIGINT)
            let exit = try await withDeadline(.seconds(40)) { await dev.process.wait() }
            #expect(exit == 0)
            #expect(children.allSatisfy { kill($0, 0) != 0 }, "a child outlived the supervisor")
        } catch {
            print(dev.log)
            await dev.remove(children: children)
            throw error
        }
        await dev.remove(children: children)
    }

    /// Running: exists and is not a zombie (an orphan's exit is reaped by PID 1, which in a
    /// container may never do it).
    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return false }
        let text = String(decoding: stat, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return true }
        return !text[text.index(after: close)...].drop { $0 == " " }.hasPrefix("Z")
    }

    /// A supervisor killed with SIGKILL cannot stop its children: they notice they are orphans and
    /// stop by themselves, so no worker keeps its port (and the next `make run` can start).
    @Test func childrenStopWhenTheSupervisorIsKilledHard() async throws {
        let dev = try await DevFleet()
        var children: [Int32] = []
        do {
            try await dev.waitReady()
            let processes = try await dev.status().processes
            children = processes.map(\.pid)
            dev.process.signal(SIGKILL)
            _ = await dev.process.wait()
            // Ours watch their parent; the Python SMTP sink does not (the test stops it below).
            let ours = processes.filter { $0.role != "smtp-sink" }.map(\.pid)
            try await waitUntil(deadline: .seconds(40)) { ours.allSatisfy { !Self.isAlive($0) } }
        } catch {
            print(dev.log)
            await dev.remove(children: children)
            throw error
        }
        await dev.remove(children: children)
    }
}
