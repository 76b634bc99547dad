#if canImport(Glibc)
public import Glibc
#endif
import Synchronization

/// Runs another program (a baseline benchmark, the servers script) and waits for it on a thread of
/// its own, since `read` and `waitpid` block.
public enum ChildProcess {
    public struct Result: Sendable {
        public var status: Int32
        /// Standard output, when captured.
        public var output: String
    }

    public struct Failed: Error, CustomStringConvertible {
        public var command: String
        public var status: Int32
        public var output: String
        public var description: String {
            "\(command) exited with status \(status)" + (output.isEmpty ? "" : ": \(output.suffix(500))")
        }
    }

    /// Runs `argv` (`argv[0]` a path, or a name looked up in PATH) with `extraEnvironment` added to
    /// this process's environment. Standard error passes through; standard output is captured when
    /// `captureOutput` is set. Secrets go in `extraEnvironment`, never in `argv`.
    public static func run(_ argv: [String], extraEnvironment: [String: String] = [:],
                           captureOutput: Bool = true) async throws -> Result {
        let thread = ConnectionThread(name: "child \(argv.first ?? "")")
        defer { thread.stop() }
        return try await thread.submit { try runBlocking(argv, extraEnvironment: extraEnvironment, captureOutput: captureOutput) }
    }

    /// Like ``run(_:extraEnvironment:captureOutput:)`` but throws ``Failed`` on a non-zero status.
    @discardableResult
    public static func check(_ argv: [String], extraEnvironment: [String: String] = [:]) async throws -> String {
        let result = try await run(argv, extraEnvironment: extraEnvironment)
        guard result.status == 0 else {
            throw Failed(command: argv.joined(separator: " "), status: result.status, output: result.output)
        }
        return result.output
    }

    /// The descriptors open in this process, from /proc/self/fd (one directory read, rather than a
    /// probe of every possible number up to the open-file limit).
    private static func openDescriptors() -> [Int32] {
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        let own = dirfd(dir)
        var fds: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let fd = Int32(name), fd != own { fds.append(fd) }
        }
        return fds
    }

    private static func runBlocking(_ argv: [String], extraEnvironment: [String: String], captureOutput: Bool) throws -> Result {
        var fds: [Int32] = [-1, -1]
        if captureOutput { guard pipe(&fds) == 0 else { throw Failed(command: argv[0], status: -1, output: "pipe failed") } }
        let pid: pid_t
        do {
            pid = try spawnBlocking(argv, extraEnvironment: extraEnvironment, stdout: captureOutput ? fds[1] : nil, stderr: nil)
        } catch {
            if captureOutput { close(fds[0]); close(fds[1]) }
            throw error
        }
        if captureOutput { close(fds[1]) }
        var output: [UInt8] = []
        if captureOutput {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fds[0], &buffer, buffer.count)
                if n > 0 { output.append(contentsOf: buffer[0..<n]); continue }
                if n < 0 && errno == EINTR { continue }
                break
            }
            close(fds[0])
        }
        return Result(status: waitBlocking(pid), output: String(decoding: output, as: UTF8.self))
    }

    /// posix_spawn with a clean signal state and only stdin/stdout/stderr inherited; `stdout` and
    /// `stderr` replace the child's descriptors 1 and 2 when given.
    static func spawnBlocking(_ argv: [String], extraEnvironment: [String: String], unsetting: Set<String> = [], stdout: Int32?, stderr: Int32?) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) }
        if let stderr { posix_spawn_file_actions_adddup2(&actions, stderr, 2) }
        // The child keeps stdin, stdout and stderr only. Otherwise it inherits the write end of the
        // capture pipe (a daemon it starts would hold it open and the read below would never end)
        // and this process's sockets.
        for fd in openDescriptors() where fd > 2 {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        var environment: [String: String] = [:]
        var e = environ
        while let entry = e.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { environment[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            e += 1
        }
        for name in unsetting { environment[name] = nil }
        environment.merge(extraEnvironment) { $1 }
        let cEnvironment = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let cArguments = argv.map { strdup($0) } + [nil]
        defer {
            cEnvironment.forEach { free($0) }
            cArguments.forEach { free($0) }
        }
        // The child starts with no signal blocked and default handlers: threads of this process
        // block some (pgbench, for one, stops on SIGALRM).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGALRM, SIGINT, SIGTERM, SIGCHLD, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArguments, cEnvironment)
        guard rc == 0 else {
            throw Failed(command: argv.joined(separator: " "), status: -1, output: String(cString: strerror(rc)))
        }
        return pid
    }

    /// Waits for `pid` and returns its exit status, or 128 + the signal that killed it.
    static func waitBlocking(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED / WEXITSTATUS by hand: the macros do not import.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// The path of this process's executable (`/proc/self/exe`), or nil if it cannot be read.
    public static var currentExecutable: String? { executable(of: "self") }

    /// The executable a process runs now (after any `exec`), from `/proc/<pid>/exe`.
    public static func executable(of pid: pid_t) -> String? { executable(of: String(pid)) }

    private static func executable(of process: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(process)/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Starts `argv` in the background, its standard output and error appended to `logFile`.
    /// `unsetting` names variables of this process's environment the child does not inherit.
    public static func spawn(_ argv: [String], extraEnvironment: [String: String] = [:], unsetting: Set<String> = [],
                             logFile: String) throws -> RunningProcess {
        let fd = open(logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failed(command: argv.joined(separator: " "), status: -1, output: "cannot open \(logFile)") }
        defer { close(fd) }
        let pid = try spawnBlocking(argv, extraEnvironment: extraEnvironment, unsetting: unsetting, stdout: fd, stderr: fd)
        return RunningProcess(pid: pid)
    }
}

extension ChildProcess {
    /// Starts `argv` in the background and hands each line of its standard output and error to
    /// `line`, from a thread of its own (reads block), until the child closes them.
    public static func spawn(_ argv: [String], extraEnvironment: [String: String] = [:], unsetting: Set<String> = [],
                             line: @escaping @Sendable (String) -> Void) throws -> RunningProcess {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw Failed(command: argv.joined(separator: " "), status: -1, output: "pipe failed: \(String(cString: strerror(errno)))")
        }
        let pid: pid_t
        do {
            pid = try spawnBlocking(argv, extraEnvironment: extraEnvironment, unsetting: unsetting, stdout: fds[1], stderr: fds[1])
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        close(fds[1])
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        let reader = ConnectionThread(name: "output \(pid)", spin: .zero)
        let fd = fds[0]
        Task {
            _ = try? await reader.submit { readLines(fd, line) }
            reader.stop()
        }
        return RunningProcess(pid: pid)
    }

    private static func readLines(_ fd: Int32, _ line: @Sendable (String) -> Void) {
        defer { close(fd) }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            pending += buffer[0..<n]
            while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                line(String(decoding: pending[..<end], as: UTF8.self))
                pending.removeSubrange(...end)
            }
        }
        if !pending.isEmpty { line(String(decoding: pending, as: UTF8.self)) }
    }
}

/// A child started with ``ChildProcess/spawn(_:extraEnvironment:logFile:)``.
///
/// One thread of its own waits for the child (`waitpid` blocks) from the start, and keeps its exit
/// status: every caller of ``wait()`` gets the same status (no two callers reap the same pid and
/// one of them reads nothing), and ``poll()`` only reads it.
public final class RunningProcess: Sendable {
    public let pid: pid_t
    private struct State {
        var status: Int32?
        var waiters: [UInt64: UnsafeContinuation<Int32, Never>] = [:]
        var next: UInt64 = 0
    }
    private let state = Mutex(State())

    init(pid: pid_t) {
        self.pid = pid
        let reaper = ConnectionThread(name: "reap \(pid)", spin: .zero)
        reaper.execute { [self] in finish(ChildProcess.waitBlocking(pid)) }
        reaper.stop()
    }

    private func finish(_ status: Int32) {
        let waiters = state.withLock { state in
            state.status = status
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: status) }
    }

    /// Sends `signal` to the child, unless it has ended (its pid may belong to another process by then).
    public func signal(_ signal: Int32) {
        state.withLock { state in
            if state.status == nil { _ = kill(pid, signal) }
        }
    }

    /// The exit status if the child has ended, nil while it runs. Does not block.
    public func poll() -> Int32? { state.withLock { $0.status } }

    /// Waits for the child to end; its status (the code, or 128 + the signal that killed it).
    /// Cancelled, it returns -1 at once, and the child goes on.
    public func wait() async -> Int32 {
        let key = state.withLock { state -> UInt64 in
            state.next += 1
            return state.next
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Int32, Never>) in
                let ended: Int32? = state.withLock { state in
                    if let status = state.status { return status }
                    if Task.isCancelled { return -1 }
                    state.waiters[key] = continuation
                    return nil
                }
                if let ended { continuation.resume(returning: ended) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: key) }
            waiter?.resume(returning: -1)
        }
    }

    /// Waits up to `limit` for the child to end; nil if it still runs.
    public func wait(upTo limit: Duration) async -> Int32? {
        if let status = poll() { return status }
        return await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await self.wait() }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? poll()
        }
    }
}
