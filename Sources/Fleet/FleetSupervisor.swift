import AsyncHTTPClient
import NIOCore
import NIOHTTP1
public import ClientRuntime
public import FoundationEssentials
public import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs a ``FleetPlan``'s processes: starts each, restarts any that ends (after the delay its
/// ``RestartPolicy`` gives: a quarter second for a process killed from outside, longer for one in
/// a crash loop), sends signals on request, and stops them all. A `Service`: `run()` watches the
/// processes until graceful shutdown or ``stopAll(grace:)``.
///
/// Each process gets `SHOPFLEET_PARENT_PID`, so that Shopfleet processes stop by themselves if the
/// supervisor is killed outright (``ClientRuntime/ParentWatch``).
public final class FleetSupervisor: Service, Sendable {
    /// Where the processes' output goes.
    public enum Output: Sendable {
        /// Each line to `line`, with the process's name (`shopfleet dev` prints them prefixed).
        case lines(@Sendable (_ process: String, _ line: String) -> Void)
        /// Appended to `<directory>/<name>.log`, across restarts.
        case files(directory: String)
    }

    /// One thing that happened to a process.
    public struct Event: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case started
            case exited(status: Int32)
            case restarting(after: Duration)
        }
        public var process: String
        public var kind: Kind
        public var at: Date
    }

    /// A process as it is now.
    public struct Status: Sendable, Equatable, Codable {
        public var name: String
        public var role: String
        public var kind: FleetPlan.Kind
        public var pid: Int32
        public var port: Int
        public var health: String?
        public var restarts: Int
        public var startedAt: Date
        /// Whether the supervisor restarts it when it ends (false after ``stop(_:)``).
        public var supervised: Bool
    }

    private struct Child {
        var process: RunningProcess
        var startedAt: Date
        var started: ContinuousClock.Instant
        var restarts: Int
        var policy: RestartPolicy
        var supervised: Bool
    }

    public let plan: FleetPlan
    private let output: Output
    private let policy: RestartPolicy
    private let children = Mutex<[String: Child]>([:])
    private let log = Mutex<[Event]>([])
    private let stopping = Atomic<Bool>(false)
    /// Wakes `run()`'s watchers when a process is started again by hand.
    private let changed: @Sendable () -> Void

    /// - Parameter onChange: called after every start, exit and restart (`shopfleet dev` rewrites
    ///   its state file).
    public init(plan: FleetPlan, output: Output, policy: RestartPolicy = RestartPolicy(),
                onChange: @escaping @Sendable () -> Void = {}) {
        self.plan = plan
        self.output = output
        self.policy = policy
        self.changed = onChange
    }

    // MARK: - Starting and watching

    /// Starts every process of the plan that is not running. Throws if one cannot be spawned.
    public func start() throws {
        for process in plan.processes where children.withLock({ $0[process.name] == nil }) {
            try spawn(process, restarts: 0)
        }
    }

    /// Starts the processes (those not started yet) and restarts any that ends, until graceful
    /// shutdown or ``stopAll(grace:)``; then stops them all.
    public func run() async throws {
        try start()
        // The watchers wait for their processes on threads, which cancellation cannot interrupt:
        // a shutdown or a cancellation stops the processes, and that ends the watchers.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    for process in plan.processes {
                        group.addTask { await self.watch(process) }
                    }
                }
            } onGracefulShutdown: {
                self.stopping.store(true, ordering: .releasing)
                Task { await self.stopAll() }
            }
        } onCancel: {
            self.stopping.store(true, ordering: .releasing)
            Task { await self.stopAll() }
        }
        await stopAll()
    }

    /// Waits for `process` to end and starts it again, until the fleet stops.
    private func watch(_ process: FleetPlan.Process) async {
        while !stopping.load(ordering: .acquiring) {
            guard let child = children.withLock({ $0[process.name] }) else { return }
            let status = await child.process.wait()
            if stopping.load(ordering: .acquiring) { return }
            record(process.name, .exited(status: status))
            // Stopped on purpose (``stop(_:)``): wait until started again by hand.
            if !(children.withLock { $0[process.name]?.supervised ?? false }) {
                while !stopping.load(ordering: .acquiring),
                      children.withLock({ $0[process.name].map { $0.process === child.process } ?? true }) {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                continue
            }
            let delay = children.withLock { children -> Duration in
                guard var entry = children[process.name] else { return .zero }
                let delay = entry.policy.delay(afterExit: status, ranFor: .now - entry.started)
                children[process.name] = entry
                return delay
            }
            record(process.name, .restarting(after: delay))
            try? await Task.sleep(for: delay)
            if stopping.load(ordering: .acquiring) { return }
            // Someone may have started it by hand meanwhile.
            guard children.withLock({ $0[process.name]?.process === child.process }) else { continue }
            do {
                try spawn(process, restarts: (children.withLock { $0[process.name]?.restarts } ?? 0) + 1)
            } catch {
                emit(process.name, "supervisor: cannot restart \(process.name): \(error)")
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func spawn(_ process: FleetPlan.Process, restarts: Int) throws {
        var environment = plan.environment(of: process)
        environment[ParentWatch.variable] = String(getpid())
        let running: RunningProcess
        switch output {
        case .files(let directory):
            running = try ChildProcess.spawn(process.argv, extraEnvironment: environment, logFile: "\(directory)/\(process.name).log")
        case .lines(let line):
            let name = process.name
            running = try ChildProcess.spawn(process.argv, extraEnvironment: environment) { line(name, $0) }
        }
        children.withLock { children in
            let previous = children[process.name]
            children[process.name] = Child(process: running, startedAt: Date(), started: .now, restarts: restarts,
                                           policy: previous?.policy ?? policy, supervised: true)
        }
        record(process.name, .started)
    }

    private func record(_ process: String, _ kind: Event.Kind) {
        log.withLock { $0.append(Event(process: process, kind: kind, at: Date())) }
        switch kind {
        case .exited(let status): emit(process, "supervisor: \(process) \(RestartPolicy.describe(status))")
        case .restarting(let after): emit(process, "supervisor: restarting \(process) in \(after)")
        case .started: break
        }
        changed()
    }

    private func emit(_ process: String, _ text: String) {
        switch output {
        case .lines(let line): line(process, text)
        case .files(let directory):
            let fd = open("\(directory)/\(process).log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return }
            let bytes = Array((text + "\n").utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }

    // MARK: - What runs

    /// Every process as last started, in the plan's order.
    public func status() -> [Status] {
        children.withLock { children in
            plan.processes.compactMap { process in
                guard let child = children[process.name] else { return nil }
                return Status(name: process.name, role: process.role, kind: process.kind, pid: child.process.pid, port: process.port,
                              health: process.health, restarts: child.restarts, startedAt: child.startedAt, supervised: child.supervised)
            }
        }
    }

    /// What happened so far: starts, exits, restarts.
    public var events: [Event] { log.withLock { $0 } }

    /// The pid `name` runs as now, if it was started.
    public func pid(of name: String) -> Int32? { children.withLock { $0[name]?.process.pid } }

    /// Whether `name`'s current process is alive (started and not yet ended).
    public func isRunning(_ name: String) -> Bool {
        guard let process = children.withLock({ $0[name]?.process }) else { return false }
        return process.poll() == nil
    }

    // MARK: - Acting on processes

    /// Sends `signal` to the current process of `name`.
    public func signal(_ name: String, _ signal: Int32) {
        children.withLock { $0[name] }?.process.signal(signal)
    }

    /// SIGKILLs `name` and waits (up to 10 s) for it to be gone; the supervisor starts it again.
    public func kill(_ name: String) async throws {
        guard let process = children.withLock({ $0[name]?.process }) else { throw PlanError("no process \(name) in this fleet") }
        process.signal(SIGKILL)
        _ = try await withDeadline(.seconds(10)) { await process.wait() }
    }

    /// Stops `name` (SIGTERM, then SIGKILL after `grace`) and does not restart it until ``start(_:)``.
    public func stop(_ name: String, grace: Duration = .seconds(25)) async {
        guard let process = children.withLock({ children -> RunningProcess? in
            children[name]?.supervised = false
            return children[name]?.process
        }) else { return }
        await Self.terminate([(name, process)], grace: grace) { self.emit($0, $1) }
    }

    /// Starts `name` again after ``stop(_:)`` (or at once, if it is running, nothing happens).
    public func start(_ name: String) throws {
        guard let process = plan.process(name) else { throw PlanError("no process \(name) in this fleet") }
        if isRunning(name) { return }
        try spawn(process, restarts: (children.withLock { $0[name]?.restarts } ?? -1) + 1)
    }

    /// Stops every process: SIGTERM, then SIGKILL for any still there after `grace`. The
    /// supervisor restarts nothing afterwards.
    public func stopAll(grace: Duration = .seconds(25)) async {
        stopping.store(true, ordering: .releasing)
        let all = children.withLock { children in plan.processes.compactMap { p in children[p.name].map { (p.name, $0.process) } } }
        await Self.terminate(all, grace: grace) { self.emit($0, $1) }
    }

    private static func terminate(_ processes: [(String, RunningProcess)], grace: Duration,
                                  say: @escaping @Sendable (String, String) -> Void) async {
        for (_, process) in processes where process.poll() == nil { process.signal(SIGTERM) }
        await withTaskGroup(of: Void.self) { group in
            for (name, process) in processes {
                group.addTask {
                    if (try? await withDeadline(grace, { await process.wait() })) == nil {
                        say(name, "supervisor: \(name) did not stop within \(grace); killing it")
                        process.signal(SIGKILL)
                        _ = await process.wait()
                    }
                }
            }
        }
    }

    // MARK: - Readiness

    /// Whether `name` answers its health check now (the sink: accepts connections).
    public func isReady(_ name: String) async -> Bool {
        guard let process = plan.process(name), isRunning(name) else { return false }
        guard let health = process.health else { return LocalPort.accepts(process.port) }
        let code = try? await HTTPClient.shared.execute(HTTPClientRequest(url: health), timeout: .seconds(2)).status.code
        return code == 200
    }

    /// Waits until every process (or those named) is ready; the error names those that are not.
    public func waitUntilReady(_ names: [String]? = nil, deadline: Duration = .seconds(120)) async throws {
        let wanted = names ?? plan.processes.map(\.name)
        let waiting = Mutex<[String]>(wanted)
        do {
            try await waitUntil(deadline: deadline, interval: .milliseconds(100)) {
                var notReady: [String] = []
                for name in waiting.withLock({ $0 }) where !(await isReady(name)) { notReady.append(name) }
                waiting.withLock { $0 = notReady }
                return notReady.isEmpty
            }
        } catch is DeadlineExceeded {
            throw PlanError("not ready after \(deadline): \(waiting.withLock { $0 }.joined(separator: ", "))")
        }
    }
}
