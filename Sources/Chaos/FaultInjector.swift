import AsyncHTTPClient
import ClientRuntime
import Fleet
import FoundationEssentials
import NIOCore
import NIOHTTP1
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Carries out a fault schedule against a running fleet: signals through its supervisor, servers
/// through `scripts/servers.sh` (the instance the fleet's servers run as), the gateway through
/// the sandbox's fault endpoint. Each fault runs on its own, so a 45 s outage does not hold up
/// the kills meanwhile; what really happened, and when, is kept for the report.
final class FaultInjector: Sendable {
    /// A fault as it happened: seconds from the start of shopping.
    struct Happened: Sendable, Codable {
        var at: Double
        /// For a server: when it was down (a graceful stop takes a while).
        var down: Double?
        var until: Double
        var fault: Fault
        var summary: String
        var kind: String
        var error: String?

        /// How many emails or webhook calls it can make the notifications worker send twice: one
        /// for each handler that had sent but not yet committed when it struck — every handler
        /// of the killed or frozen process (`inFlight`), of every replica when the database
        /// went away.
        func notificationCopies(inFlight: Int, replicas: Int) -> Int {
            switch fault {
            case .kill(let process), .freeze(let process, _): return process.hasPrefix("notifications") ? inFlight : 0
            case .restart(let server, _): return server == .postgres ? inFlight * replicas : 0
            case .gateway: return 0
            }
        }
    }

    /// How to stop and start a server: `scripts/servers.sh down-<server>|up-<server> <instance>`.
    struct Servers: Sendable {
        var script: String
        var instance: String

        func run(_ action: String) async throws {
            try await ChildProcess.check(["/bin/bash", script, action, instance])
        }
    }

    let supervisor: FleetSupervisor
    let servers: Servers?
    let sandboxPort: Int
    /// The gateway's secret key: the sandbox's fault endpoint needs it.
    let sandboxKey: String
    let started: ContinuousClock.Instant
    private let log = Mutex<[Happened]>([])
    private let say: @Sendable (String) -> Void

    init(supervisor: FleetSupervisor, servers: Servers?, sandboxPort: Int, sandboxKey: String, started: ContinuousClock.Instant,
         say: @escaping @Sendable (String) -> Void) {
        self.supervisor = supervisor
        self.servers = servers
        self.sandboxPort = sandboxPort
        self.sandboxKey = sandboxKey
        self.started = started
        self.say = say
    }

    var happened: [Happened] { log.withLock { $0 }.sorted { $0.at < $1.at } }

    /// Runs every fault at its time; returns when the last is over (every server back up).
    func run(_ schedule: [ScheduledFault]) async {
        await withTaskGroup(of: Void.self) { group in
            for planned in schedule {
                group.addTask {
                    // A run stopped before a fault's time does not inject it; one under way ends
                    // at once (the frozen process goes on, the server comes back, the gateway heals).
                    do { try await Task.sleep(until: self.started + .milliseconds(Int64(planned.at * 1000))) } catch { return }
                    await self.inject(planned.fault)
                }
            }
        }
    }

    private func inject(_ fault: Fault) async {
        let at = seconds(since: started)
        say("t=\(Fault.format(at))s \(fault.summary)")
        var error: String?
        var down: Double?
        do {
            switch fault {
            case .kill(let process):
                try await supervisor.kill(process)
            case .freeze(let process, let length):
                supervisor.signal(process, SIGSTOP)
                try? await Task.sleep(for: .milliseconds(Int64(length * 1000)))
                supervisor.signal(process, SIGCONT)
            case .restart(let server, let length):
                guard let servers else { throw ScenarioError("no servers script: SHOPFLEET_SERVERS_SCRIPT and SHOPFLEET_SERVERS_INSTANCE are not set") }
                try await servers.run("down-\(server.rawValue)")
                let stopped = seconds(since: started)
                down = stopped
                say("t=\(Fault.format(stopped))s \(server.rawValue) is down")
                if length > 0 { try? await Task.sleep(for: .milliseconds(Int64(length * 1000))) }
                try await servers.run("up-\(server.rawValue)")
            case .gateway(let window):
                try await setGateway(latency: window.latencyMilliseconds, failures: window.failureRate, drops: window.dropRate)
                try? await Task.sleep(for: .milliseconds(Int64(window.seconds * 1000)))
                try await setGateway(latency: 0, failures: 0, drops: 0)
            }
        } catch let failure {
            error = "\(failure)"
            say("t=\(Fault.format(seconds(since: started)))s \(fault.summary) failed: \(failure)")
        }
        let until = seconds(since: started)
        if case .restart = fault { say("t=\(Fault.format(until))s \(fault.summary): over") }
        log.withLock { $0.append(Happened(at: at, down: down, until: until, fault: fault, summary: fault.summary, kind: fault.kind, error: error)) }
    }

    private func setGateway(latency: Int, failures: Double, drops: Double) async throws {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(sandboxPort)/_sandbox/faults")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Authorization", value: "Bearer \(sandboxKey)")
        request.body = .bytes(ByteBuffer(string: #"{"latencyMilliseconds": \#(latency), "failureRate": \#(failures), "dropRate": \#(drops)}"#))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        guard response.status == .ok else { throw ScenarioError("the sandbox answered \(response.status) to new faults") }
    }
}
