#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A thread that owns one C connection. Work reaches it as jobs; Swift's cooperative pool never runs
/// a blocking C call.
///
/// The thread sleeps in `poll(2)` on an eventfd (woken when a job arrives) and, optionally, on the
/// connection's socket: a ``Service`` installed by the owner is called after every batch of jobs and
/// whenever the socket is readable or its timeout passed (rabbitmq-c needs this for heartbeats and
/// incoming frames, libpq for notifications).
///
/// Everything the owner keeps about the C connection is touched only on this thread; owners are
/// `@unchecked Sendable` for that reason and check it with ``preconditionOnThread()``.
public final class ConnectionThread: @unchecked Sendable {
    /// What the owner wants after a service call.
    public struct ServiceRequest: Sendable {
        /// A socket to wait on for readability, or -1.
        public var fd: Int32
        /// Wait for the socket to be writable too (the owner has bytes the socket would not take).
        public var writable: Bool
        /// The longest sleep before the next service call, in milliseconds; -1 for no limit.
        public var timeoutMilliseconds: Int32
        /// Call the service again at once (it left work undone).
        public var again: Bool

        public init(fd: Int32 = -1, writable: Bool = false, timeoutMilliseconds: Int32 = -1, again: Bool = false) {
            self.fd = fd
            self.writable = writable
            self.timeoutMilliseconds = timeoutMilliseconds
            self.again = again
        }
    }

    /// Called on the thread with whether the socket was ready (readable, or writable when asked,
    /// or closed by the peer).
    public typealias Service = (_ readable: Bool) -> ServiceRequest

    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var sleeping = false
        var stopping = false
        var stopped = false
    }

    public let name: String
    /// How long the thread keeps looking for a next job, or for its service's socket to turn
    /// readable, before it sleeps. A caller that awaits a result and then submits its next job (a
    /// transaction's statements, a consumer's ack) usually does so within tens of microseconds, and
    /// a Redis reply on loopback comes within about fifty; catching either saves the thread a
    /// wake-up, which on a virtual machine with idle cores costs more than the system calls.
    /// Off by default: where the process shares few cores with the servers (two, here), the spinning
    /// took CPU from RabbitMQ and PostgreSQL and every benchmark did as well or better without it
    /// (the inbox + outbox worker 17 % better; docs/benchmarks.md). Worth trying where the process
    /// has cores of its own.
    public let spin: Duration
    private let state = Mutex(State())
    /// Mirrors "jobs is not empty", so spinning reads an atomic instead of taking the lock.
    private let hasJobs = Atomic<Bool>(false)
    private let caughtSpinning = Atomic<Int>(0)
    /// How many times spinning found a job or a readable socket, and so the thread did not sleep.
    public var wakeUpsSavedBySpinning: Int { caughtSpinning.load(ordering: .relaxed) }
    /// The pipe a job writes to when the thread sleeps: [read end, write end].
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private var thread: pthread_t?
    /// `SHOPFLEET_THREAD_SPIN_US` (microseconds, default 0: no spinning).
    public static let defaultSpin: Duration = spin(fromEnvironment: "SHOPFLEET_THREAD_SPIN_US") ?? .zero

    /// A spin in microseconds from the environment variable `name`; nil when it is not set or not
    /// a whole number of zero or more.
    public static func spin(fromEnvironment name: String) -> Duration? {
        guard let text = getenv(name), let micros = Int(String(cString: text)), micros >= 0 else { return nil }
        return .microseconds(micros)
    }

    /// Only touched on the thread.
    private var service: Service?
    /// Further sockets the thread waits on (connections it drives without blocking), by fd.
    /// Only touched on the thread.
    private var watchers: [Int32: (writable: Bool, callback: Watcher)] = [:]

    /// Called on the thread when a watched socket is ready: readable (or closed by the peer), or
    /// writable when that was asked for.
    public typealias Watcher = (_ readable: Bool, _ writable: Bool) -> Void
    private var threadID: pthread_t?

    public init(name: String, spin: Duration = ConnectionThread.defaultSpin) {
        self.name = name
        self.spin = spin
        var fds: [Int32] = [-1, -1]
        let rc0 = pipe(&fds)
        precondition(rc0 == 0, "pipe failed: errno \(errno)")
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        self.wakeFD = fds[0]
        self.wakeWriteFD = fds[1]
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { raw in
            let me = Unmanaged<ConnectionThread>.fromOpaque(raw!).takeRetainedValue()
            me.runLoop()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(tid)
    }

    deinit {
        close(wakeFD)
        close(wakeWriteFD)
    }

    /// True when called on this connection's thread.
    public var isCurrent: Bool {
        guard let threadID else { return false }
        return pthread_equal(threadID, pthread_self()) != 0
    }

    public func preconditionOnThread(file: StaticString = #fileID, line: UInt = #line) {
        precondition(isCurrent, "\(name): touched off its connection thread", file: file, line: line)
    }

    /// Installs the service hook. Call on the thread.
    public func setService(_ service: Service?) {
        preconditionOnThread()
        self.service = service
    }

    /// Waits on `fd` too, from now on, and calls `callback` on the thread whenever it is ready;
    /// `writable` asks for writability as well. Watching an fd again replaces its callback. Call on
    /// the thread; a thread can drive several connections this way besides its own service.
    public func watch(_ fd: Int32, writable: Bool = false, _ callback: @escaping Watcher) {
        preconditionOnThread()
        watchers[fd] = (writable, callback)
    }

    /// Asks for (or stops asking for) writability of a watched fd.
    public func watch(_ fd: Int32, writable: Bool) {
        preconditionOnThread()
        watchers[fd]?.writable = writable
    }

    /// Stops waiting on `fd`. Call on the thread, before the fd is closed.
    public func unwatch(_ fd: Int32) {
        preconditionOnThread()
        watchers[fd] = nil
    }

    /// Queues a job. Returns false when the thread has stopped (the job will not run).
    @discardableResult
    public func execute(_ job: @escaping @Sendable () -> Void) -> Bool {
        let wake: Bool? = state.withLock { s in
            if s.stopped || s.stopping { return nil }
            s.jobs.append(job)
            hasJobs.store(true, ordering: .releasing)
            return s.sleeping
        }
        guard let wake else { return false }
        if wake {
            var one: UInt8 = 1
            _ = write(wakeWriteFD, &one, 1)
        }
        return true
    }

    /// Runs `body` on the thread and returns its result. Called on the thread itself (a task
    /// running with this thread as its executor preference), it runs `body` at once.
    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        if isCurrent { return try body() }
        return try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<T, any Error>) in
            let queued = execute {
                continuation.resume(with: Result { try body() })
            }
            if !queued { continuation.resume(throwing: ConnectionThreadStopped(name: name)) }
        }
    }

    /// Runs `body` on the thread and lets it resume the continuation when it likes (publisher
    /// confirms, replies that arrive later).
    public func submitDeferred<T: Sendable>(
        _ body: @escaping @Sendable (UnsafeContinuation<T, any Error>) -> Void
    ) async throws -> T {
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<T, any Error>) in
            if isCurrent {
                body(continuation)
                return
            }
            let queued = execute { body(continuation) }
            if !queued { continuation.resume(throwing: ConnectionThreadStopped(name: name)) }
        }
    }

    /// Lets the queued jobs run, then ends the thread. Jobs queued afterwards are refused.
    public func stop() {
        let wake = state.withLock { s -> Bool in
            s.stopping = true
            return s.sleeping
        }
        if wake {
            var one: UInt8 = 1
            _ = write(wakeWriteFD, &one, 1)
        }
    }

    /// Spins up to `spin` for a job to arrive or the service's socket to turn readable (a reply);
    /// true if one did. Sockets of ``watch(_:writable:_:)`` are not looked at while spinning.
    private func spinForWork(fd: Int32, readable: inout Bool) -> Bool {
        let until = ContinuousClock.now + spin
        var checks = 0
        while true {
            if hasJobs.load(ordering: .acquiring) {
                caughtSpinning.add(1, ordering: .relaxed)
                return true
            }
            checks += 1
            if checks % 16 == 0 {
                if fd >= 0 {
                    var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    if poll(&ready, 1, 0) > 0 {
                        readable = true
                        caughtSpinning.add(1, ordering: .relaxed)
                        return true
                    }
                }
                if ContinuousClock.now >= until { return false }
            }
        }
    }

    private func runLoop() {
        threadID = pthread_self()
        var request = ServiceRequest()
        var readable = false
        while true {
            let (jobs, stopping) = state.withLock { s in
                let jobs = s.jobs
                s.jobs.removeAll(keepingCapacity: true)
                hasJobs.store(false, ordering: .releasing)
                return (jobs, s.stopping)
            }
            for job in jobs { job() }
            if stopping && jobs.isEmpty {
                let leftovers = state.withLock { s -> [@Sendable () -> Void] in
                    s.stopped = true
                    let rest = s.jobs
                    s.jobs = []
                    return rest
                }
                for job in leftovers { job() }
                service = nil
                return
            }
            if let service {
                request = service(readable)
                readable = false
                if request.again { continue }
            }
            let block = jobs.isEmpty
            if block && spin > .zero && spinForWork(fd: service == nil ? -1 : request.fd, readable: &readable) { continue }
            if block {
                let mayBlock = state.withLock { s -> Bool in
                    if !s.jobs.isEmpty || s.stopping { return false }
                    s.sleeping = true
                    return true
                }
                if !mayBlock { continue }
            }
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let serviceFD = request.fd >= 0 && service != nil
            if serviceFD {
                fds.append(pollfd(fd: request.fd, events: Int16(POLLIN) | (request.writable ? Int16(POLLOUT) : 0), revents: 0))
            }
            let watched = fds.count
            for (fd, watcher) in watchers {
                fds.append(pollfd(fd: fd, events: Int16(POLLIN) | (watcher.writable ? Int16(POLLOUT) : 0), revents: 0))
            }
            let timeout = block ? (service == nil ? -1 : request.timeoutMilliseconds) : 0
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if block {
                state.withLock { $0.sleeping = false }
            }
            if n > 0 {
                if fds[0].revents & Int16(POLLIN) != 0 {
                    var drain = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                    _ = withUnsafeMutableBytes(of: &drain) { read(wakeFD, $0.baseAddress, $0.count) }
                }
                if serviceFD, fds[1].revents != 0 {
                    readable = true
                }
                for ready in fds[watched...] where ready.revents != 0 {
                    // Looked up again: an earlier callback may have stopped watching this one.
                    guard let watcher = watchers[ready.fd] else { continue }
                    watcher.callback(ready.revents & ~Int16(POLLOUT) != 0, ready.revents & Int16(POLLOUT) != 0)
                }
            }
        }
    }
}

/// A task can run on a connection's thread: `withTaskExecutorPreference(connection.executor) { … }`.
/// Its calls on that connection then run inline, with no handover between threads, and its
/// resumptions (confirms, deliveries) are queued to the thread like any job. For tight loops on one
/// connection; the code must not block the thread for long, since the connection is serviced there.
extension ConnectionThread: TaskExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !execute({ job.runSynchronously(on: self.asUnownedTaskExecutor()) }) {
            // The connection was closed: the task goes on in the global pool.
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }
}

/// The connection's thread has stopped: the connection was closed.
public struct ConnectionThreadStopped: Error, CustomStringConvertible {
    public var name: String
    public var description: String { "\(name) is closed" }
}
