import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import Synchronization
import UnixSignals
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// Runs the local fleet's processes: starts each, prints its output with its role in front,
/// restarts any that dies (with backoff), and on Ctrl-C or SIGTERM stops them all (SIGTERM,
/// then SIGKILL for any still there after 25 s).
final class Supervisor: Sendable {
    let roles: [DevCommand.Role]
    let environment: [String: String]
    private let children = Mutex<[String: DevCommand.State.Process]>([:])
    private let running = Mutex<[String: RunningProcess]>([:])
    private let stopping = Atomic<Bool>(false)
    private let started = Date()

    init(roles: [DevCommand.Role], environment: [String: String]) {
        self.roles = roles
        self.environment = environment
    }

    /// Runs until SIGINT or SIGTERM; `afterStart` runs once every process has been started.
    func run(afterStart: @escaping @Sendable () async throws -> Void) async throws {
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        for role in roles { try start(role, restarts: 0) }
        try writeState()
        await withTaskGroup(of: Void.self) { group in
            for role in roles {
                group.addTask { await self.watch(role) }
            }
            group.addTask {
                do { try await afterStart() } catch { say("setup step failed (the fleet keeps running): \(error)") }
            }
            group.addTask {
                for await signal in signals {
                    say("\(signal): stopping every process")
                    await self.stopAll()
                    return
                }
            }
            await group.waitForAll()
        }
        say("stopped")
    }

    func waitUntilReady(deadline: Duration = .seconds(120)) async throws {
        do {
            try await waitUntil(deadline: deadline) { [self] in
                for role in roles where !stopping.load(ordering: .relaxed) {
                    guard let health = role.health else { continue }
                    let code = try? await HTTPClient.shared.execute(HTTPClientRequest(url: health), timeout: .seconds(2)).status.code
                    if code != 200 { return false }
                }
                return true
            }
        } catch {
            say("not every process is ready after \(deadline); `shopfleet dev status` says which")
        }
    }

    private func start(_ role: DevCommand.Role, restarts: Int) throws {
        let prefix = "[\(role.name)]" + String(repeating: " ", count: max(0, 19 - role.name.count))
        var environment = self.environment
        environment[ParentWatch.variable] = String(getpid())
        let process = try ChildProcess.spawn(role.argv, extraEnvironment: environment) { line in
            let text = Self.readable(line)
            emit(prefix + text)
        }
        running.withLock { $0[role.name] = process }
        children.withLock {
            $0[role.name] = .init(role: role.name, pid: process.pid, port: role.port, health: role.health, restarts: restarts, startedAt: Date())
        }
    }

    /// Waits for the role's process to end and starts it again, until the fleet stops.
    private func watch(_ role: DevCommand.Role) async {
        var backoff = Backoff(initial: .seconds(1), maximum: .seconds(30))
        while !stopping.load(ordering: .acquiring) {
            guard let process = running.withLock({ $0[role.name] }) else { return }
            let status = await process.wait()
            if stopping.load(ordering: .acquiring) { return }
            let info = children.withLock { $0[role.name] }
            if let info, Date().timeIntervalSince(info.startedAt) > 60 { backoff = Backoff(initial: .seconds(1), maximum: .seconds(30)) }
            let delay = backoff.next()
            say("\(role.name) exited with status \(status); restarting in \(delay)")
            try? await Task.sleep(for: delay)
            if stopping.load(ordering: .acquiring) { return }
            do {
                try start(role, restarts: (info?.restarts ?? 0) + 1)
                try writeState()
            } catch {
                say("cannot restart \(role.name): \(error)")
            }
        }
    }

    private func stopAll() async {
        stopping.store(true, ordering: .releasing)
        let processes = running.withLock { $0 }
        for process in processes.values { process.signal(SIGTERM) }
        for (name, process) in processes {
            if (try? await withDeadline(.seconds(25), { await process.wait() })) == nil {
                say("\(name) did not stop within 25 s; killing it")
                process.signal(SIGKILL)
                _ = await process.wait()
            }
        }
    }

    private func writeState() throws {
        let state = DevCommand.State(supervisor: getpid(), startedAt: started,
                                     processes: roles.compactMap { role in children.withLock { $0[role.name] } })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(state).write(to: URL(fileURLWithPath: DevCommand.stateFile))
    }

    /// A JSON log line as `level message key=value …`; anything else as it is.
    static func readable(_ line: String) -> String {
        guard line.hasPrefix("{"), let fields = try? JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8)),
              case .string(let message)? = fields["message"] else { return line }
        var level = "info"
        if case .string(let text)? = fields["level"] { level = text }
        let skipped: Set<String> = ["message", "level", "time", "logger", "service"]
        let details = fields.filter { !skipped.contains($0.key) }.sorted { $0.key < $1.key }.map { key, value -> String in
            if case .string(let text) = value { return "\(key)=\(text)" }
            return "\(key)=\(value)"
        }
        return ([level.padding(7), message] + details).joined(separator: " ")
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

private let outputLock = Mutex<Void>(())

/// Writes a line to standard output at once (`print` buffers when the output is a pipe), one
/// line at a time whichever thread calls.
func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    outputLock.withLock { _ in
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if written <= 0 { if errno == EINTR { continue }; return }
            offset += written
        }
    }
}
