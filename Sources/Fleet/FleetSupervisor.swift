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
        /// False after ``stop(_:)``: not started again until ``start(_:)``.
        var supervised: Bool
        /// Which process of this name it is (1 for the first): a watcher acts only for the
        /// process it watched, never for one started again meanwhile.
        var generation: Int
    }

    /// Every decision to start, restart or stop is taken under this one lock, together with the
    /// spawn it leads to: nothing starts after ``stopAll(grace:)`` took its list, a stopped process
    /// is not brought back by a restart already under way, and two starters never both spawn.
    private struct State {
        var children: [String: Child] = [:]
        var stopping = false
    }

    public let plan: FleetPlan
    private let output: Output
    private let policy: RestartPolicy
    private let state = Mutex(State())
    private let log = Mutex<[Event]>([])
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

    /// Starts every process of the plan that has not been started. Throws if one cannot be spawned.
    public func start() throws {
        for process in plan.processes {
            let spawned = try state.withLock { state -> Bool in
                guard !state.stopping, state.children[process.name] == nil else { return false }
                try spawn(process, restarts: 0, policy: policy, generation: 1, into: &state)
                return true
            }
            if spawned { record(process.name, .started) }
        }
    }

    /// Starts the processes (those not started yet) and restarts any that ends, until graceful
    /// shutdown, cancellation or ``stopAll(grace:)``; then stops them all.
    public func run() async throws {
        do {
            try start()
        } catch {
            await stopAll()
            throw error
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    for process in plan.processes {
                        group.addTask { await self.watch(process) }
                    }
                }
            } onGracefulShutdown: {
                self.beginStopping()
            }
        } onCancel: {
            self.beginStopping()
        }
        await stopAll()
    }

    /// Marks the fleet as stopping and asks every process to stop (SIGTERM); ``stopAll(grace:)``
    /// waits for them and kills the late ones.
    private func beginStopping() {
        let all = state.withLock { state in
            state.stopping = true
            return state.children.values.map(\.process)
        }
        for process in all { process.signal(SIGTERM) }
    }

    /// What a watcher does once its process ended.
    private enum AfterExit {
        case end, watchAgain, waitForStart
        case restart(after: Duration)
    }

    /// Waits for `process` to end and starts it again, until the fleet stops.
    private func watch(_ process: FleetPlan.Process) async {
        while true {
            guard let watched = state.withLock({ state -> (process: RunningProcess, generation: Int)? in
                guard !state.stopping, let entry = state.children[process.name] else { return nil }
                return (entry.process, entry.generation)
            }) else { return }
            let (child, generation) = watched
            // Looks up every half second, so that a stopping fleet never waits on a process
            // that ignores SIGTERM (stopAll kills it after its grace).
            guard let status = await child.wait(upTo: .milliseconds(500)) else {
                if state.withLock({ $0.stopping }) || Task.isCancelled { return }
                continue
            }
            let next = state.withLock { state -> AfterExit in
                guard !state.stopping else { return .end }
                guard var entry = state.children[process.name], entry.generation == generation else { return .watchAgain }
                guard entry.supervised else { return .waitForStart }
                let delay = entry.policy.delay(afterExit: status, ranFor: .now - entry.started)
                state.children[process.name] = entry
                return .restart(after: delay)
            }
            if case .end = next { return }
            record(process.name, .exited(status: status))
            switch next {
            case .end, .watchAgain:
                continue
            case .waitForStart:
                await waitUntilReplaced(process.name, generation)
            case .restart(let delay):
                record(process.name, .restarting(after: delay))
                try? await Task.sleep(for: delay)
                do {
                    let spawned = try state.withLock { state -> Bool in
                        guard !state.stopping, let entry = state.children[process.name], entry.generation == generation, entry.supervised else {
                            return false
                        }
                        try spawn(process, restarts: entry.restarts + 1, policy: entry.policy, generation: generation + 1, into: &state)
                        return true
                    }
                    if spawned {
                        record(process.name, .started)
                    } else {
                        await waitUntilReplaced(process.name, generation)
                    }
                } catch {
                    emit(process.name, "supervisor: cannot restart \(process.name): \(error)")
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    /// Until the process of `name` is another than `generation` (``start(_:)``) or the fleet stops.
    private func waitUntilReplaced(_ name: String, _ generation: Int) async {
        while !state.withLock({ $0.stopping || $0.children[name]?.generation != generation }) {
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Spawns `process`, under the state's lock (a spawn takes a millisecond or two).
    private func spawn(_ process: FleetPlan.Process, restarts: Int, policy: RestartPolicy, generation: Int,
                       into state: inout State) throws {
        var environment = plan.environment(of: process)
        environment[ParentWatch.variable] = String(getpid())
        let running: RunningProcess
        switch output {
        case .files(let directory):
            running = try ChildProcess.spawn(process.argv, extraEnvironment: environment, unsetting: FleetPlan.withheld, logFile: "\(directory)/\(process.name).log")
        case .lines(let line):
            let name = process.name
            running = try ChildProcess.spawn(process.argv, extraEnvironment: environment, unsetting: FleetPlan.withheld) { line(name, $0) }
        }
        state.children[process.name] = Child(process: running, startedAt: Date(), started: .now, restarts: restarts, policy: policy,
                                             supervised: true, generation: generation)
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
        state.withLock { state in
            plan.processes.compactMap { process in
                guard let child = state.children[process.name] else { return nil }
                return Status(name: process.name, role: process.role, kind: process.kind, pid: child.process.pid, port: process.port,
                              health: process.health, restarts: child.restarts, startedAt: child.startedAt, supervised: child.supervised)
            }
        }
    }

    /// What happened so far: starts, exits, restarts.
    public var events: [Event] { log.withLock { $0 } }

    /// The pid `name` runs as now, if it was started.
    public func pid(of name: String) -> Int32? { state.withLock { $0.children[name]?.process.pid } }

    /// Whether `name`'s current process is alive (started and not yet ended).
    public func isRunning(_ name: String) -> Bool {
        guard let process = state.withLock({ $0.children[name]?.process }) else { return false }
        return process.poll() == nil
    }

    // MARK: - Acting on processes

    /// Sends `signal` to the current process of `name`.
    public func signal(_ name: String, _ signal: Int32) {
        state.withLock { $0.children[name]?.process }?.signal(signal)
    }

    /// SIGKILLs `name` and waits (up to 10 s) for it to be gone; the supervisor starts it again.
    public func kill(_ name: String) async throws {
        guard let process = state.withLock({ $0.children[name]?.process }) else { throw PlanError("no process \(name) in this fleet") }
        process.signal(SIGKILL)
        guard await process.wait(upTo: .seconds(10)) != nil else { throw PlanError("\(name) (pid \(process.pid)) did not die within 10 s of SIGKILL") }
    }

    /// Stops `name` (SIGTERM, then SIGKILL after `grace`) and does not start it again until ``start(_:)``.
    public func stop(_ name: String, grace: Duration = .seconds(25)) async {
        guard let process = state.withLock({ state -> RunningProcess? in
            state.children[name]?.supervised = false
            return state.children[name]?.process
        }) else { return }
        await Self.terminate([(name, process)], grace: grace) { self.emit($0, $1) }
    }

    /// Starts `name` again after ``stop(_:)``; if it is running, it is only supervised again.
    public func start(_ name: String) throws {
        guard let process = plan.process(name) else { throw PlanError("no process \(name) in this fleet") }
        let spawned = try state.withLock { state -> Bool in
            guard !state.stopping else { throw PlanError("the fleet is stopping") }
            let entry = state.children[name]
            if let entry, entry.process.poll() == nil {
                state.children[name]?.supervised = true
                return false
            }
            try spawn(process, restarts: (entry?.restarts ?? -1) + 1, policy: entry?.policy ?? policy, generation: (entry?.generation ?? 0) + 1,
                      into: &state)
            return true
        }
        if spawned { record(name, .started) }
    }

    /// Stops every process: SIGTERM, then SIGKILL for any still there after `grace`. Nothing is
    /// started afterwards.
    public func stopAll(grace: Duration = .seconds(25)) async {
        let all = state.withLock { state in
            state.stopping = true
            return plan.processes.compactMap { p in state.children[p.name].map { (p.name, $0.process) } }
        }
        await Self.terminate(all, grace: grace) { self.emit($0, $1) }
    }

    private static func terminate(_ processes: [(String, RunningProcess)], grace: Duration,
                                  say: @escaping @Sendable (String, String) -> Void) async {
        for (_, process) in processes { process.signal(SIGTERM) }
        await withTaskGroup(of: Void.self) { group in
            for (name, process) in processes {
                group.addTask {
                    if await process.wait(upTo: grace) == nil {
                        say(name, "supervisor: \(name) did not stop within \(grace); killing it")
                        process.signal(SIGCONT)  // a frozen process dies of SIGKILL too, but says nothing
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
