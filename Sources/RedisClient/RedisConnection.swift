public import ClientRuntime
import CHiredis
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One hiredis connection, owned by a thread of its own; callers `await` replies.
///
/// A request is written to the socket by its caller, without blocking (`send(2)` with
/// `MSG_DONTWAIT`, under a lock that keeps requests in order); the connection's thread waits on the
/// socket, parses replies with hiredis's reader and hands each request its own, in order. So a
/// command costs one wake-up of the connection's thread (its reply), not two (the job, then the
/// reply), and requests from concurrent callers share the connection as one pipeline. The
/// `redisContext` itself (connect, authentication, the reply parser) is only touched on the thread;
/// bytes a socket would not take at once wait there too, and the thread writes them when it can.
public final class RedisConnection: PooledConnection, @unchecked Sendable {
    public let configuration: RedisConfiguration
    private let thread: ConnectionThread
    /// Touched only on `thread`.
    private var context: UnsafeMutablePointer<redisContext>?
    /// Replies read but not yet handed to their request. Touched only on `thread`.
    private var received: [RedisReply] = []
    /// Touched only on `thread`.
    private var readBuffer = [UInt8](repeating: 0, count: 16 * 1024)
    private let shared = Mutex(Shared())
    private let usable = Atomic<Bool>(false)
    /// How many requests left bytes for the thread to write (for tests).
    private let handedToThread = Atomic<Int>(0)
    var requestsHandedToThread: Int { handedToThread.load(ordering: .relaxed) }
    /// Replies (or jobs) the thread caught while spinning instead of sleeping (for tests).
    var wakeUpsSavedBySpinning: Int { thread.wakeUpsSavedBySpinning }

    /// A request waiting for its replies.
    private struct Waiter {
        var continuation: UnsafeContinuation<[RedisReply], any Error>
        var expected: Int
        var command: String
        var sent: ContinuousClock.Instant
    }

    /// What callers and the thread share, under `shared`'s lock.
    private struct Shared {
        /// The socket, or -1 before it is open and after the connection failed or was closed.
        var fd: Int32 = -1
        /// Requests in the order they were written; `head` is the oldest still waiting.
        var waiters: [Waiter] = []
        var head = 0
        /// Bytes written by callers that the socket has not taken yet; the thread writes them.
        var backlog: [UInt8] = []
        /// Set once the connection is lost or closed; every later request fails with it.
        var failure: RedisError?

        var oldest: Waiter? { head < waiters.count ? waiters[head] : nil }

        /// Writes `bytes` after whatever already waits, without blocking; what the socket does not
        /// take waits in the backlog. True when this left the thread a backlog it did not have.
        mutating func write(_ bytes: [UInt8]) -> Bool {
            if !backlog.isEmpty {
                backlog.append(contentsOf: bytes)
                return false
            }
            let written = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if written == bytes.count { return false }
            // A full socket, or an error the thread will report: the rest is the thread's to write.
            backlog.append(contentsOf: bytes[max(0, written)...])
            return true
        }

        mutating func popOldest() -> Waiter {
            let waiter = waiters[head]
            head += 1
            if head == waiters.count {
                waiters.removeAll(keepingCapacity: true)
                head = 0
            }
            return waiter
        }

        mutating func takeAll() -> ArraySlice<Waiter> {
            let all = waiters[head...]
            waiters = []
            head = 0
            return all
        }
    }

    private init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.thread = ConnectionThread(name: "redis \(configuration.host):\(configuration.port)", spin: configuration.spin)
    }

    /// Connects, authenticates and selects the database; fails with `.connectionFailed` naming host
    /// and port, or `.authenticationFailed`.
    public static func connect(_ configuration: RedisConfiguration) async throws -> RedisConnection {
        let connection = RedisConnection(configuration: configuration)
        do {
            try await connection.thread.submit { try connection.open() }
        } catch {
            connection.thread.stop()
            throw error
        }
        return connection
    }

    /// The connection's own thread as a task executor: code run under
    /// `withTaskExecutorPreference(connection.executor)` is resumed on that thread when its reply
    /// arrives, with no handover to Swift's pool. Keep such code short and non-blocking: the
    /// connection is serviced there too.
    public var executor: any TaskExecutor { thread }

    public var isUsable: Bool { usable.load(ordering: .acquiring) }

    public func close() async {
        _ = try? await thread.submit {
            self.fail(RedisError(.closed, "connection is closed", host: self.configuration.host, port: self.configuration.port))
        }
        thread.stop()
    }

    /// Sends one command. An error reply throws ``RedisError`` with code `.server`.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        let reply = try await request([command])[0]
        if case .error(let message) = reply {
            throw RedisError(Self.isAuthError(message) ? .authenticationFailed : .server, message,
                             host: configuration.host, port: configuration.port, command: command.name)
        }
        return reply
    }

    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RedisReply {
        try await send(RedisCommand(name, arguments))
    }

    /// Sends all commands in one write and reads all replies: one round trip. Error replies come
    /// back in place as `.error`; they do not throw.
    public func pipeline(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        if commands.isEmpty { return [] }
        return try await request(commands)
    }

    /// MULTI … EXEC in one round trip. Returns EXEC's replies, or nil when a WATCHed key changed
    /// and the transaction was aborted. A command the server rejected while queueing aborts it with
    /// an error.
    public func transaction(_ commands: [RedisCommand]) async throws -> [RedisReply]? {
        let replies = try await pipeline([RedisCommand("MULTI")] + commands + [RedisCommand("EXEC")])
        for (index, reply) in replies.dropLast().enumerated() {
            if case .error(let message) = reply {
                throw RedisError(.server, "transaction aborted: \(message)", host: configuration.host,
                                 port: configuration.port, command: index == 0 ? "MULTI" : commands[index - 1].name)
            }
        }
        switch replies.last! {
        case .array(let results): return results
        case .null: return nil
        case .error(let message):
            throw RedisError(.server, "transaction aborted: \(message)", host: configuration.host, port: configuration.port, command: "EXEC")
        case let other:
            throw RedisError(.unexpectedReply, "EXEC answered \(other)", host: configuration.host, port: configuration.port, command: "EXEC")
        }
    }

    /// EVALSHA, and EVAL when the server answers NOSCRIPT (first use, or after a restart or
    /// SCRIPT FLUSH).
    @discardableResult
    public func evaluate(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) async throws -> RedisReply {
        let tail: [any RedisArgument] = [keys.count] + keys + arguments
        do {
            return try await send(RedisCommand("EVALSHA", [script.sha1] + tail))
        } catch let error as RedisError where error.code == .server && error.message.hasPrefix("NOSCRIPT") {
            return try await send(RedisCommand("EVAL", [script.source] + tail))
        }
    }

    /// Writes the commands from the caller's thread, without blocking, and waits for their replies.
    private func request(_ commands: [RedisCommand]) async throws -> [RedisReply] {
        let bytes = Self.encode(commands)
        let name = commands[0].name
        let count = commands.count
        if let replies = try requestInline(bytes, count: count, name: name) { return replies }
        return try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<[RedisReply], any Error>) in
            enum Outcome { case sent, handToThread, failed(RedisError) }
            let outcome = shared.withLock { s -> Outcome in
                if var failure = s.failure {
                    failure.command = name
                    return .failed(failure)
                }
                s.waiters.append(Waiter(continuation: continuation, expected: count, command: name, sent: .now))
                return s.write(bytes) ? .handToThread : .sent
            }
            switch outcome {
            case .sent:
                break
            case .handToThread:
                handedToThread.add(1, ordering: .relaxed)
                // Refused only once the thread stopped, after close() failed every waiting request,
                // this one included.
                thread.execute { _ = self.pump(readable: false) }
            case .failed(let error):
                continuation.resume(throwing: error)
            }
        }
    }

    // MARK: - On the connection thread

    private func open() throws {
        thread.preconditionOnThread()
        let c = configuration
        let timeout = Self.timeval(c.connectTimeout)
        guard let ctx = redisConnectWithTimeout(c.host, Int32(c.port), timeout) else {
            throw RedisError(.connectionFailed, "cannot allocate a connection", host: c.host, port: c.port)
        }
        if ctx.pointee.err != 0 {
            let message = Self.errorString(ctx)
            redisFree(ctx)
            throw RedisError(.connectionFailed, "cannot connect: \(message)", host: c.host, port: c.port)
        }
        context = ctx
        redisSetTimeout(ctx, Self.timeval(c.commandTimeout))
        // From here on requests are written by their callers and replies read on this thread; the
        // setup commands are the first, answered inline (nothing else can be in flight yet).
        shared.withLock { $0.fd = ctx.pointee.fd }
        do {
            var setup: [RedisCommand] = []
            if let password = c.password {
                setup.append(c.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password))
            }
            // PING surfaces NOAUTH now rather than on the first real command.
            setup.append(RedisCommand("PING"))
            if c.database != 0 { setup.append(RedisCommand("SELECT", c.database)) }
            let answered: [RedisReply]?
            do {
                answered = try requestInline(Self.encode(setup), count: setup.count, name: setup[0].name)
            } catch var error as RedisError where error.code == .connectionLost {
                error.code = .connectionFailed
                throw error
            }
            guard let replies = answered else {
                throw RedisError(.connectionFailed, "cannot send the setup commands", host: c.host, port: c.port)
            }
            for (command, reply) in zip(setup, replies) {
                if case .error(let message) = reply {
                    throw RedisError(Self.isAuthError(message) ? .authenticationFailed : .server,
                                     message, host: c.host, port: c.port, command: command.name)
                }
            }
        } catch {
            if context != nil { fail(RedisError(.closed, "connection is closed", host: c.host, port: c.port)) }
            throw error
        }
        usable.store(true, ordering: .releasing)
        thread.setService { readable in self.pump(readable: readable) }
    }

    /// Writes what waits in the backlog, reads and parses what arrived, hands out complete replies,
    /// and checks the oldest request's deadline. Returns what to wait for next.
    private func pump(readable: Bool) -> ConnectionThread.ServiceRequest {
        thread.preconditionOnThread()
        guard let ctx = context else { return ConnectionThread.ServiceRequest() }
        let fd = ctx.pointee.fd
        // 1. Bytes callers could not write.
        if let failure = writeBacklog(fd) { return lost(failure) }
        // 2. What arrived, and whatever an inline request read beyond its own replies.
        if readable, let failure = readAvailable(ctx) { return lost(failure) }
        parsing: while true {
            switch nextReply(ctx) {
            case .reply(let reply): received.append(reply)
            case .none: break parsing
            case .failed(let failure): return lost(failure)
            }
        }
        // 3. Complete replies to their requests, in order; the oldest request's deadline.
        var done: [(UnsafeContinuation<[RedisReply], any Error>, [RedisReply])] = []
        let now = ContinuousClock.now
        let (unsolicited, overdue, waitingSince, backlogged) = shared.withLock { s in
            var used = 0
            while let oldest = s.oldest, received.count - used >= oldest.expected {
                let waiter = s.popOldest()
                done.append((waiter.continuation, Array(received[used..<(used + waiter.expected)])))
                used += waiter.expected
            }
            let unsolicited = s.oldest == nil && received.count > used
            received.removeFirst(used)
            let since = s.oldest?.sent
            let overdue = since.map { now - $0 > configuration.commandTimeout } ?? false
            return (unsolicited, overdue, since, !s.backlog.isEmpty)
        }
        for (continuation, replies) in done { continuation.resume(returning: replies) }
        if unsolicited { return lost("a reply arrived that no command asked for") }
        if overdue { return lost("no reply within \(configuration.commandTimeout)") }
        // Sleep until the socket is ready, or the oldest request's deadline; without a request,
        // wake once a second anyway, since a caller may write one while the thread sleeps.
        var timeout: Int32 = 1000
        if let waitingSince {
            let left = configuration.commandTimeout - (now - waitingSince)
            timeout = Int32(max(1, min(1000, Int(left.seconds * 1000) + 1)))
        }
        return ConnectionThread.ServiceRequest(fd: fd, writable: backlogged, timeoutMilliseconds: timeout)
    }

    private enum Parsed { case reply(RedisReply), none, failed(String) }

    /// The next complete reply the parser holds, if any.
    private func nextReply(_ ctx: UnsafeMutablePointer<redisContext>) -> Parsed {
        var raw: UnsafeMutableRawPointer?
        if redisReaderGetReply(ctx.pointee.reader, &raw) != REDIS_OK {
            return .failed("protocol error: \(Self.readerError(ctx))")
        }
        guard let raw else { return .none }
        defer { freeReplyObject(raw) }
        return .reply(Self.convert(raw.assumingMemoryBound(to: redisReply.self)))
    }

    /// Writes as much of the backlog as the socket takes now. Returns what failed, or nil.
    private func writeBacklog(_ fd: Int32) -> String? {
        let writeError: Int32? = shared.withLock { s in
            guard !s.backlog.isEmpty else { return nil }
            let written = s.backlog.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if written < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? nil : errno }
            s.backlog.removeFirst(written)
            return nil
        }
        return writeError.map { "cannot write: \(Self.errnoText($0))" }
    }

    /// Feeds what the socket holds now to the reply parser (`blocking`: waits for the first bytes,
    /// up to the socket's receive timeout, the command timeout). Returns what failed, or nil.
    private func readAvailable(_ ctx: UnsafeMutablePointer<redisContext>, blocking: Bool = false) -> String? {
        let fd = ctx.pointee.fd
        var flags = blocking ? Int32(0) : Int32(MSG_DONTWAIT)
        while true {
            let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, flags) }
            if n < 0 && flags == 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return "no reply within \(configuration.commandTimeout)"
            }
            flags = Int32(MSG_DONTWAIT)
            if n > 0 {
                let fed = readBuffer.withUnsafeBytes { raw in
                    raw.withMemoryRebound(to: CChar.self) { redisReaderFeed(ctx.pointee.reader, $0.baseAddress, n) }
                }
                if fed != REDIS_OK { return "cannot buffer a reply" }
                if n < readBuffer.count { return nil }
            } else if n == 0 {
                return "the server closed the connection"
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                return nil
            } else {
                return "cannot read: \(Self.errnoText(errno))"
            }
        }
    }

    /// A request from the connection's own thread (a pinned caller) while nothing else is in
    /// flight: written and answered right here, as a blocking client would, with no job and no
    /// continuation. Nil when it does not apply (another thread's request is in flight, bytes wait
    /// to be written, or the request is larger than 64 KB); then the request takes the usual way.
    private func requestInline(_ bytes: [UInt8], count: Int, name: String) throws -> [RedisReply]? {
        guard bytes.count <= 64 * 1024, thread.isCurrent, let ctx = context else { return nil }
        let fd = ctx.pointee.fd
        let started: Bool = shared.withLock { s in
            guard s.failure == nil, s.oldest == nil, s.backlog.isEmpty, received.isEmpty else { return false }
            // What the socket does not take waits in the backlog (written below), so later requests
            // go after it.
            _ = s.write(bytes)
            return true
        }
        guard started else { return nil }
        let deadline = ContinuousClock.now + configuration.commandTimeout
        var replies: [RedisReply] = []
        while replies.count < count {
            switch nextReply(ctx) {
            case .reply(let reply):
                replies.append(reply)
                continue
            case .failed(let text):
                throw inlineLost(text, command: name)
            case .none:
                break
            }
            // More bytes needed. With nothing left to write, a blocking read (the socket's receive
            // timeout is the command timeout); otherwise wait for either direction.
            if let text = writeBacklog(fd) { throw inlineLost(text, command: name) }
            let left = deadline - .now
            if left <= .zero { throw inlineLost("no reply within \(configuration.commandTimeout)", command: name) }
            if shared.withLock({ $0.backlog.isEmpty }) {
                if let text = readAvailable(ctx, blocking: true) { throw inlineLost(text, command: name) }
            } else {
                var ready = pollfd(fd: fd, events: Int16(POLLIN) | Int16(POLLOUT), revents: 0)
                let n = poll(&ready, 1, Int32(max(1, Int(left.seconds * 1000) + 1)))
                if n > 0, ready.revents & ~Int16(POLLOUT) != 0, let text = readAvailable(ctx) {
                    throw inlineLost(text, command: name)
                }
            }
        }
        return replies
    }

    private func inlineLost(_ message: String, command: String) -> RedisError {
        _ = lost(message)
        var error = shared.withLock { $0.failure }
            ?? RedisError(.connectionLost, "connection lost: \(message)", host: configuration.host, port: configuration.port)
        error.command = command
        return error
    }

    /// Fails every waiting request with `.connectionLost` and closes the connection.
    private func lost(_ message: String) -> ConnectionThread.ServiceRequest {
        fail(RedisError(.connectionLost, "connection lost: \(message)", host: configuration.host, port: configuration.port))
        return ConnectionThread.ServiceRequest()
    }

    /// Fails every waiting request, and every later one, with `error`, and frees the context.
    private func fail(_ error: RedisError) {
        thread.preconditionOnThread()
        usable.store(false, ordering: .releasing)
        let waiting = shared.withLock { s -> ArraySlice<Waiter> in
            if s.failure == nil { s.failure = error }
            s.fd = -1
            s.backlog = []
            return s.takeAll()
        }
        received = []
        // Callers stopped writing to the socket (fd is -1 under the lock) before it is closed.
        if let context { redisFree(context) }
        context = nil
        thread.setService(nil)
        for waiter in waiting {
            var error = error
            error.command = waiter.command
            waiter.continuation.resume(throwing: error)
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulk(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: Int(r.len))))
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: Int(r.len)), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(r.integer)
        case REDIS_REPLY_ARRAY:
            return .array((0..<Int(r.elements)).map { convert(r.element[$0]!) })
        default:
            return .null
        }
    }

    /// The RESP bytes of a pipeline: the commands' encodings, one after another.
    static func encode(_ commands: [RedisCommand]) -> [UInt8] {
        if commands.count == 1 { return commands[0].resp }
        var out: [UInt8] = []
        out.reserveCapacity(commands.reduce(0) { $0 + $1.resp.count })
        for command in commands { out.append(contentsOf: command.resp) }
        return out
    }

    private static func errorString(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "error \(ctx.pointee.err)" : String(decoding: bytes, as: UTF8.self)
        }
    }

    private static func readerError(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.reader.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private static func errnoText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    private static func isAuthError(_ message: String) -> Bool {
        message.hasPrefix("WRONGPASS") || message.hasPrefix("NOAUTH") || message.contains("invalid password")
            || message.contains("invalid username-password")
    }

    private static func timeval(_ duration: Duration) -> Glibc.timeval {
        let micros = Int(duration.seconds * 1_000_000)
        return Glibc.timeval(tv_sec: micros / 1_000_000, tv_usec: micros % 1_000_000)
    }
}
