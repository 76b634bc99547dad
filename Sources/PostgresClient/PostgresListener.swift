public import ClientRuntime
import CLibPQ
public import Logging
import Synchronization

/// LISTEN on a dedicated connection. Notifications arrive on ``events``; when the connection drops
/// it reconnects with backoff, LISTENs again and yields ``Event/reconnected`` so the consumer knows
/// it may have missed notifications (and should poll once).
public final class PostgresListener: @unchecked Sendable {
    public enum Event: Sendable, Equatable {
        case notification(channel: String, payload: String)
        case reconnected
        /// The connection dropped; reconnecting in the background.
        case disconnected(reason: String)
    }

    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let configuration: PostgresConfiguration
    private let logger: Logger
    private let thread: ConnectionThread
    /// Touched only on `thread`.
    private var conn: OpaquePointer?
    private var channels: [String] = []
    private var backoff = Backoff()
    private var reconnectAt: ContinuousClock.Instant?
    private let closed = Atomic<Bool>(false)

    private init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.thread = ConnectionThread(name: "postgres listener \(configuration.host):\(configuration.port)")
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(10_000))
    }

    /// Connects and LISTENs on `channels`; fails if the first connection cannot be made.
    public static func start(_ configuration: PostgresConfiguration, channels: [String],
                             logger: Logger = Logger(label: "shopfleet.postgres.listener")) async throws -> PostgresListener {
        let listener = PostgresListener(configuration: configuration, logger: logger)
        do {
            try await listener.thread.submit {
                listener.channels = channels
                try listener.connectAndListen()
                listener.thread.setService { readable in listener.service(readable: readable) }
            }
        } catch {
            listener.thread.stop()
            throw error
        }
        return listener
    }

    /// LISTENs on one more channel.
    public func listen(_ channel: String) async throws {
        try await thread.submit {
            self.channels.append(channel)
            guard let conn = self.conn else { return }  // picked up on reconnect
            try self.exec(conn, "LISTEN \(quoteIdentifier(channel))")
        }
    }

    public func close() async {
        closed.store(true, ordering: .releasing)
        _ = try? await thread.submit {
            self.thread.setService(nil)
            if let conn = self.conn { PQfinish(conn) }
            self.conn = nil
        }
        thread.stop()
        continuation.finish()
    }

    // MARK: - On the listener thread

    private func connectAndListen() throws {
        let conn = try PostgresConnection.openRaw(configuration)
        do {
            for channel in channels {
                try exec(conn, "LISTEN \(quoteIdentifier(channel))")
            }
        } catch {
            PQfinish(conn)
            throw error
        }
        self.conn = conn
    }

    private func exec(_ conn: OpaquePointer, _ sql: String) throws {
        let result = PQexec(conn, sql)
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else {
            throw PostgresError(.server, PostgresConnection.trimmed(String(cString: PQerrorMessage(conn))),
                                host: configuration.host, port: configuration.port, query: sql)
        }
    }

    private func service(readable: Bool) -> ConnectionThread.ServiceRequest {
        if closed.load(ordering: .acquiring) { return .init() }
        if let reconnectAt {
            let now = ContinuousClock.now
            if now < reconnectAt {
                return .init(timeoutMilliseconds: max(1, (reconnectAt - now).milliseconds))
            }
            self.reconnectAt = nil
            do {
                try connectAndListen()
                backoff.reset()
                logger.info("LISTEN connection back", metadata: ["channels": "\(channels)"])
                continuation.yield(.reconnected)
            } catch {
                logger.warning("LISTEN reconnect failed", metadata: ["error": "\(error)"])
                self.reconnectAt = .now + backoff.next()
            }
            return service(readable: false)
        }
        guard let conn else { return .init() }
        // Notifications are read without blocking; this connection runs nothing but LISTEN.
        if PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK {
            let reason = PostgresConnection.trimmed(String(cString: PQerrorMessage(conn)))
            logger.warning("LISTEN connection lost; reconnecting", metadata: ["reason": "\(reason)"])
            continuation.yield(.disconnected(reason: reason))
            PQfinish(conn)
            self.conn = nil
            reconnectAt = .now + backoff.next()
            return service(readable: false)
        }
        while let notify = PQnotifies(conn) {
            let channel = String(cString: notify.pointee.relname)
            let payload = String(cString: notify.pointee.extra)
            PQfreemem(notify)
            continuation.yield(.notification(channel: channel, payload: payload))
        }
        return .init(fd: PQsocket(conn))
    }
}

/// `"name"` with embedded quotes doubled.
public func quoteIdentifier(_ name: String) -> String {
    "\"" + name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
}
