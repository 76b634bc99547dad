public import ClientRuntime
import CHiredis
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One hiredis connection, owned by a thread of its own; callers `await` replies.
public final class RedisConnection: PooledConnection, @unchecked Sendable {
    public let configuration: RedisConfiguration
    private let thread: ConnectionThread
    /// Touched only on `thread`.
    private var context: UnsafeMutablePointer<redisContext>?
    private let usable = Atomic<Bool>(false)

    private init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.thread = ConnectionThread(name: "redis \(configuration.host):\(configuration.port)")
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
    /// `withTaskExecutorPreference(connection.executor)` calls this connection without a handover
    /// between threads. Keep such code short and non-blocking: the connection is serviced there too.
    public var executor: any TaskExecutor { thread }

    public var isUsable: Bool { usable.load(ordering: .acquiring) }

    public func close() async {
        _ = try? await thread.submit { self.free() }
        thread.stop()
    }

    /// Sends one command. An error reply throws ``RedisError`` with code `.server`.
    @discardableResult
    public func send(_ command: RedisCommand) async throws -> RedisReply {
        let reply = try await thread.submit { try self.roundTrip([command])[0] }
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
        return try await thread.submit { try self.roundTrip(commands) }
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
        usable.store(true, ordering: .releasing)
        do {
            var setup: [RedisCommand] = []
            if let password = c.password {
                setup.append(c.username.map { RedisCommand("AUTH", $0, password) } ?? RedisCommand("AUTH", password))
            }
            // PING surfaces NOAUTH now rather than on the first real command.
            setup.append(RedisCommand("PING"))
            if c.database != 0 { setup.append(RedisCommand("SELECT", c.database)) }
            for (command, reply) in zip(setup, try roundTrip(setup)) {
                if case .error(let message) = reply {
                    throw RedisError(Self.isAuthError(message) ? .authenticationFailed : .server,
                                     message, host: c.host, port: c.port, command: command.name)
                }
            }
        } catch {
            free()
            throw error
        }
    }

    private func free() {
        usable.store(false, ordering: .releasing)
        if let context { redisFree(context) }
        context = nil
    }

    /// Writes every command, then reads one reply per command. The one place hiredis statuses
    /// become Swift errors.
    private func roundTrip(_ commands: [RedisCommand]) throws -> [RedisReply] {
        thread.preconditionOnThread()
        let c = configuration
        guard let ctx = context else {
            throw RedisError(.closed, "connection is closed", host: c.host, port: c.port, command: commands.first?.name)
        }
        // The whole pipeline as one RESP buffer, handed to hiredis in one call.
        let protocolBytes = Self.encode(commands)
        let status = protocolBytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { redisAppendFormattedCommand(ctx, $0.baseAddress, $0.count) }
        }
        if status != REDIS_OK { throw lost(ctx, commands[0].name) }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(ctx, &raw) != REDIS_OK || raw == nil {
                throw lost(ctx, command.name)
            }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            replies.append(Self.convert(reply))
            freeReplyObject(raw)
        }
        return replies
    }

    private func lost(_ ctx: UnsafeMutablePointer<redisContext>, _ command: String) -> RedisError {
        let message = Self.errorString(ctx)
        free()
        return RedisError(.connectionLost, "connection lost: \(message)", host: configuration.host,
                          port: configuration.port, command: command)
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

    private static func isAuthError(_ message: String) -> Bool {
        message.hasPrefix("WRONGPASS") || message.hasPrefix("NOAUTH") || message.contains("invalid password")
            || message.contains("invalid username-password")
    }

    private static func timeval(_ duration: Duration) -> Glibc.timeval {
        let micros = Int(duration.seconds * 1_000_000)
        return Glibc.timeval(tv_sec: micros / 1_000_000, tv_usec: micros % 1_000_000)
    }
}
