public import ClientRuntime
import CRabbitMQ
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A connection to RabbitMQ over rabbitmq-c, owned by a thread of its own.
///
/// rabbitmq-c does nothing in the background, so the thread does it: it sleeps in `poll(2)` on the
/// socket and a wake-up pipe, reads frames (deliveries, confirms, returns, closes), sends heartbeats,
/// and runs the jobs callers queue. When the connection drops it fails unconfirmed publishes with
/// `.connectionLost` (the caller publishes again: nothing confirmed is lost), reports
/// ``AMQPConnectionEvent/disconnected(reason:)``, reconnects with backoff, reopens every channel with
/// its QoS and confirm mode, re-consumes every consumer, and reports
/// ``AMQPConnectionEvent/recovered(attempts:)``. While it is down, operations fail at once with
/// `.notConnected` rather than hang.
public final class AMQPConnection: @unchecked Sendable {
    public let configuration: AMQPConfiguration
    public let events: AsyncStream<AMQPConnectionEvent>
    let thread: ConnectionThread
    let logger: Logger
    private let eventContinuation: AsyncStream<AMQPConnectionEvent>.Continuation
    private let connected = Atomic<Bool>(false)
    private let closing = Atomic<Bool>(false)
    /// Frames that wait for the burst's flush (one job, one transmit): settlements and publishes.
    let outgoing = Mutex(Outgoing())

    // Everything below is touched only on `thread`.
    var state: amqp_connection_state_t?
    var channels: [UInt16: ChannelState] = [:]
    private var nextChannelID: UInt16 = 1
    private var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
    private var reconnectAt: ContinuousClock.Instant?
    private var reconnectAttempts = 0
    private var nextHousekeeping = ContinuousClock.now
    /// The socket a burst's flush corked, or -1.
    var corkedSocket: Int32 = -1
    let scratch: UnsafeMutablePointer<amqp_pool_t>
    /// Ack, nack and reject frames sent (a coalesced burst counts once), for the tests.
    let settlementFrames = Atomic<Int>(0)
    /// Replies waited for, and of those the ones whose socket the kernel still held corked when the
    /// wait began (read back with `getsockopt`, so it counts what the kernel did): for the tests.
    let repliesAwaited = Atomic<Int>(0)
    let repliesAwaitedCorked = Atomic<Int>(0)

    /// Confined to the connection thread.
    final class ChannelState: @unchecked Sendable {
        let id: UInt16
        var open = false
        /// Bumped on every (re)open: delivery tags of an earlier incarnation are never acked.
        var incarnation: UInt64 = 0
        var prefetch: UInt16?
        var confirms = false
        var publishSeq: UInt64 = 0
        var pending: [PendingConfirm] = []
        var lastReturn: (message: AMQPMessage, code: UInt16, text: String)?
        var consumers: [String: ConsumerState] = [:]
        /// Delivery tags handed out for manual acknowledgement and not settled yet, ascending: a
        /// burst of acks that covers a prefix of them goes out as one ack with `multiple`.
        var unsettled: [UInt64] = []
        init(id: UInt16) { self.id = id }
    }

    struct PendingConfirm {
        var seq: UInt64
        var messageID: String?
        var continuation: ConfirmWaiter
    }

    /// Who waits for a publish's confirm: a task, or a callback run on the connection's thread.
    enum ConfirmWaiter: Sendable {
        case task(UnsafeContinuation<Void, any Error>)
        case callback(@Sendable ((any Error)?) -> Void)

        func resume() {
            switch self {
            case .task(let continuation): continuation.resume()
            case .callback(let callback): callback(nil)
            }
        }

        func resume(throwing error: any Error) {
            switch self {
            case .task(let continuation): continuation.resume(throwing: error)
            case .callback(let callback): callback(error)
            }
        }
    }

    /// Confined to the connection thread once registered.
    final class ConsumerState: @unchecked Sendable {
        let queue: String
        let tag: String
        let noAck: Bool
        let exclusive: Bool
        let arguments: AMQPTable
        let continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation
        /// Called on the thread instead of yielding to the stream (request/reply).
        let handler: (@Sendable (AMQPDelivery) -> Void)?
        init(queue: String, tag: String, noAck: Bool, exclusive: Bool, arguments: AMQPTable,
             continuation: AsyncThrowingStream<AMQPDelivery, any Error>.Continuation,
             handler: (@Sendable (AMQPDelivery) -> Void)? = nil) {
            self.handler = handler
            self.queue = queue
            self.tag = tag
            self.noAck = noAck
            self.exclusive = exclusive
            self.arguments = arguments
            self.continuation = continuation
        }
    }

    private init(configuration: AMQPConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.thread = ConnectionThread(name: "amqp \(configuration.host):\(configuration.port)")
        (events, eventContinuation) = AsyncStream.makeStream(of: AMQPConnectionEvent.self, bufferingPolicy: .bufferingNewest(100))
        scratch = .allocate(capacity: 1)
        init_amqp_pool(scratch, 4096)
    }

    deinit {
        empty_amqp_pool(scratch)
        scratch.deallocate()
    }

    /// Connects and logs in. Fails with `.connectionFailed` naming host and port within the
    /// connect timeout, or `.authenticationFailed` for a refused login.
    public static func connect(_ configuration: AMQPConfiguration,
                               logger: Logger = Logger(label: "shopfleet.amqp")) async throws -> AMQPConnection {
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        do {
            try await connection.thread.submit {
                try connection.openSocketAndLogin()
                connection.thread.setService { readable in connection.service(readable: readable) }
            }
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

    /// The connection's thread, for connections that can share it: a `PostgresClient` created
    /// `on:` it is driven there without blocking, so code running on this thread (a worker's
    /// consumers) awaits PostgreSQL without waking another thread. It ends when this connection
    /// is closed; close such clients first.
    public var connectionThread: ConnectionThread { thread }

    /// True while connected (false while recovering and after close).
    public var isConnected: Bool { connected.load(ordering: .acquiring) }

    /// Opens a channel. Channels survive reconnects (they are reopened with their settings).
    public func openChannel() async throws -> AMQPChannel {
        let id = try await thread.submit { () -> UInt16 in
            try self.requireConnected("open a channel")
            let maxChannels = max(1, Int(amqp_get_channel_max(self.state)))
            var candidate = self.nextChannelID
            for _ in 0..<maxChannels {
                if self.channels[candidate] == nil { break }
                candidate = candidate >= UInt16(min(maxChannels, 65535)) ? 1 : candidate + 1
            }
            guard self.channels[candidate] == nil else {
                throw self.error(.channelClosed, "no free channel (channel_max \(maxChannels))")
            }
            self.nextChannelID = candidate >= UInt16(min(maxChannels, 65535)) ? 1 : candidate + 1
            let channel = ChannelState(id: candidate)
            self.channels[candidate] = channel
            do {
                try self.reopen(channel)
            } catch {
                self.channels[candidate] = nil
                throw error
            }
            return candidate
        }
        return AMQPChannel(connection: self, id: id)
    }

    /// Closes every channel and the connection. Consumers' sequences end; unconfirmed publishes
    /// fail with `.closed`.
    public func close() async {
        closing.store(true, ordering: .releasing)
        _ = try? await thread.submit {
            self.thread.setService(nil)
            let closed = self.error(.closed, "connection closed by this process")
            for channel in self.channels.values {
                for pending in channel.pending { pending.continuation.resume(throwing: closed) }
                channel.pending.removeAll()
                for consumer in channel.consumers.values { consumer.continuation.finish() }
                channel.consumers.removeAll()
            }
            self.channels.removeAll()
            if let state = self.state {
                _ = amqp_connection_close(state, 200)
                amqp_destroy_connection(state)
            }
            self.state = nil
            self.connected.store(false, ordering: .releasing)
        }
        thread.stop()
        eventContinuation.finish()
    }

    // MARK: - Connecting (on the thread)

    private func openSocketAndLogin() throws {
        thread.preconditionOnThread()
        let c = configuration
        guard let state = amqp_new_connection() else { throw error(.connectionFailed, "out of memory") }
        guard let socket = amqp_tcp_socket_new(state) else {
            amqp_destroy_connection(state)
            throw error(.connectionFailed, "cannot create a socket")
        }
        var connectTimeout = Self.timeval(c.connectTimeout)
        errno = 0
        let status = amqp_socket_open_noblock(socket, c.host, Int32(c.port), &connectTimeout)
        if status != AMQP_STATUS_OK.rawValue {
            let cause = errno != 0 ? " (\(String(cString: strerror(errno))))" : ""
            amqp_destroy_connection(state)
            throw error(.connectionFailed, "cannot connect: \(Self.statusText(status))\(cause)")
        }
        var rpcTimeout = Self.timeval(c.rpcTimeout)
        amqp_set_rpc_timeout(state, &rpcTimeout)
        amqp_set_handshake_timeout(state, &connectTimeout)
        var properties = CValues.table(["connection_name": .string(c.connectionName), "product": "shopfleet"], scratch)
        let reply = shopfleet_amqp_login_plain(state, c.vhost, 0, 131_072, Int32(c.heartbeat), &properties, c.user, c.password)
        recycle_amqp_pool(scratch)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            let failure = loginError(reply)
            amqp_destroy_connection(state)
            throw failure
        }
        self.state = state
        connected.store(true, ordering: .releasing)
        nextHousekeeping = .now + housekeepingInterval
    }

    private func loginError(_ reply: amqp_rpc_reply_t) -> AMQPError {
        switch reply.reply_type {
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == SHOPFLEET_CONNECTION_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = CValues.string(close.reply_text)
            if close.reply_code == 403 {
                return error(.authenticationFailed, "login refused for user '\(configuration.user)': \(text)", replyCode: 403)
            }
            return error(.connectionFailed, "broker refused the connection to vhost '\(configuration.vhost)': \(text)",
                         replyCode: close.reply_code)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let status = reply.library_error
            if status == AMQP_STATUS_CONNECTION_CLOSED.rawValue || status == AMQP_STATUS_SOCKET_CLOSED.rawValue {
                // Brokers without authentication_failure_close hang up on a bad login.
                return error(.authenticationFailed, "broker closed the connection during login (user '\(configuration.user)')")
            }
            return error(.connectionFailed, "login failed: \(Self.statusText(status))")
        default:
            return error(.connectionFailed, "login failed (reply type \(reply.reply_type.rawValue))")
        }
    }

    /// Opens (or reopens) a channel and re-applies QoS, confirms and consumers.
    func reopen(_ channel: ChannelState) throws {
        guard let state else { throw error(.notConnected, "connection is down; recovering") }
        _ = amqp_channel_open(state, channel.id)
        try awaitReply(state, channel: channel.id, doing: "open channel \(channel.id)")
        channel.open = true
        channel.incarnation &+= 1
        channel.unsettled.removeAll()
        channel.publishSeq = 0
        if let prefetch = channel.prefetch {
            _ = amqp_basic_qos(state, channel.id, 0, prefetch, 0)
            try awaitReply(state, channel: channel.id, doing: "set prefetch \(prefetch)")
        }
        if channel.confirms {
            _ = amqp_confirm_select(state, channel.id)
            try awaitReply(state, channel: channel.id, doing: "enable publisher confirms")
        }
        for consumer in channel.consumers.values.sorted(by: { $0.tag < $1.tag }) {
            do {
                try startConsumer(consumer, on: channel)
            } catch let failure as AMQPError where failure.code == .channelClosed {
                // Its queue is gone: end that consumer, keep the others.
                channel.consumers[consumer.tag] = nil
                consumer.continuation.finish(throwing: failure)
                if !channel.open { try reopen(channel) }
                return
            }
        }
    }

    func startConsumer(_ consumer: ConsumerState, on channel: ChannelState) throws {
        guard let state else { throw error(.notConnected, "connection is down; recovering") }
        let arguments = CValues.table(consumer.arguments, scratch)
        defer { recycle_amqp_pool(scratch) }
        _ = amqp_basic_consume(state, channel.id, CValues.bytes(consumer.queue, scratch), CValues.bytes(consumer.tag, scratch),
                               0, consumer.noAck ? 1 : 0, consumer.exclusive ? 1 : 0, arguments)
        try awaitReply(state, channel: channel.id, doing: "consume from queue '\(consumer.queue)'")
    }

    // MARK: - The service loop (on the thread)

    private var housekeepingInterval: Duration {
        configuration.heartbeat > 0 ? .milliseconds(max(250, configuration.heartbeat * 1000 / 4)) : .seconds(5)
    }

    private func service(readable: Bool) -> ConnectionThread.ServiceRequest {
        if closing.load(ordering: .acquiring) { return .init() }
        guard let state else { return serviceReconnect() }
        let now = ContinuousClock.now
        // Heartbeats are sent and checked by rabbitmq-c inside its frame wait: call it regularly.
        var mustRead = readable || now >= nextHousekeeping
        if now >= nextHousekeeping { nextHousekeeping = now + housekeepingInterval }
        var budget = 256
        while budget > 0 {
            if !mustRead && amqp_frames_enqueued(state) == 0 && amqp_data_in_buffer(state) == 0 { break }
            var frame = amqp_frame_t()
            var immediately = Glibc.timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(state, &frame, &immediately)
            if status == AMQP_STATUS_TIMEOUT.rawValue { break }
            guard status == AMQP_STATUS_OK.rawValue else {
                connectionLost("reading from the socket: \(Self.statusText(status))")
                return service(readable: false)
            }
            handle(frame)
            if self.state == nil { return service(readable: false) }
            budget -= 1
            mustRead = true
        }
        if amqp_frames_enqueued(state) == 0 { amqp_maybe_release_buffers(state) }
        let wait = max(1, (nextHousekeeping - ContinuousClock.now).milliseconds)
        return .init(fd: amqp_get_sockfd(state), timeoutMilliseconds: wait, again: budget == 0)
    }

    private func serviceReconnect() -> ConnectionThread.ServiceRequest {
        guard let at = reconnectAt else { return .init() }
        let now = ContinuousClock.now
        if now < at { return .init(timeoutMilliseconds: max(1, (at - now).milliseconds)) }
        reconnectAttempts += 1
        do {
            try openSocketAndLogin()
            for channel in channels.values.sorted(by: { $0.id < $1.id }) {
                try reopen(channel)
            }
            logger.info("AMQP connection recovered", metadata: [
                "broker": "\(configuration)", "attempts": "\(reconnectAttempts)", "channels": "\(channels.count)",
            ])
            eventContinuation.yield(.recovered(attempts: reconnectAttempts))
            reconnectAt = nil
            reconnectAttempts = 0
            backoff.reset()
            return service(readable: false)
        } catch {
            if let state {
                amqp_destroy_connection(state)
                self.state = nil
                connected.store(false, ordering: .releasing)
            }
            let delay = backoff.next()
            logger.warning("AMQP reconnect failed", metadata: [
                "error": "\(error)", "attempt": "\(reconnectAttempts)", "retryIn": "\(delay)",
            ])
            reconnectAt = .now + delay
            return .init(timeoutMilliseconds: max(1, delay.milliseconds))
        }
    }

    /// The connection is gone: fail what cannot complete, keep what can be restored, reconnect later.
    func connectionLost(_ reason: String) {
        guard let state else { return }
        amqp_destroy_connection(state)
        self.state = nil
        connected.store(false, ordering: .releasing)
        let lost = error(.connectionLost, "connection lost (\(reason)); the publish was not confirmed and must be sent again")
        for channel in channels.values {
            channel.open = false
            channel.lastReturn = nil
            for pending in channel.pending { pending.continuation.resume(throwing: lost) }
            channel.pending.removeAll()
        }
        logger.warning("AMQP connection lost; reconnecting", metadata: ["broker": "\(configuration)", "reason": "\(reason)"])
        eventContinuation.yield(.disconnected(reason: reason))
        if closing.load(ordering: .acquiring) { return }
        reconnectAt = .now + backoff.next()
    }

    private func handle(_ frame: amqp_frame_t) {
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return }
        let channelID = frame.channel
        let method = frame.payload.method
        switch method.id {
        case SHOPFLEET_BASIC_DELIVER:
            let deliver = method.decoded.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let tag = CValues.string(deliver.consumer_tag)
            let exchange = CValues.string(deliver.exchange)
            let routingKey = CValues.string(deliver.routing_key)
            guard let message = readContent(channelID, exchange: exchange, routingKey: routingKey) else { return }
            guard let channel = channels[channelID], let consumer = channel.consumers[tag] else {
                // A delivery for a consumer we cancelled: give it back.
                if let state { _ = amqp_basic_reject(state, channelID, deliver.delivery_tag, 1) }
                return
            }
            if !consumer.noAck { channel.unsettled.append(deliver.delivery_tag) }
            let delivery = AMQPDelivery(
                message: message, deliveryTag: deliver.delivery_tag, redelivered: deliver.redelivered != 0,
                consumerTag: tag, channel: AMQPChannel(connection: self, id: channelID),
                incarnation: channel.incarnation, noAck: consumer.noAck)
            if let handler = consumer.handler {
                handler(delivery)
            } else {
                consumer.continuation.yield(delivery)
            }
        case SHOPFLEET_BASIC_ACK:
            let ack = method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            confirm(channelID, upTo: ack.delivery_tag, multiple: ack.multiple != 0, ok: true)
        case SHOPFLEET_BASIC_NACK:
            let nack = method.decoded.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            confirm(channelID, upTo: nack.delivery_tag, multiple: nack.multiple != 0, ok: false)
        case SHOPFLEET_BASIC_RETURN:
            let ret = method.decoded.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let code = ret.reply_code
            let text = CValues.string(ret.reply_text)
            guard let message = readContent(channelID, exchange: CValues.string(ret.exchange),
                                            routingKey: CValues.string(ret.routing_key)) else { return }
            if let channel = channels[channelID], channel.confirms {
                channel.lastReturn = (message, code, text)
            } else {
                logger.warning("message returned as unroutable", metadata: [
                    "exchange": "\(message.exchange)", "routingKey": "\(message.routingKey)", "reply": "\(code) \(text)",
                ])
            }
        case SHOPFLEET_CHANNEL_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            channelClosedByBroker(channelID, code: close.reply_code, text: CValues.string(close.reply_text))
            reopenIfConsuming(channelID)
        case SHOPFLEET_CONNECTION_CLOSE:
            let close = method.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = CValues.string(close.reply_text)
            if let state {
                var ok = amqp_connection_close_ok_t()
                _ = amqp_send_method(state, 0, SHOPFLEET_CONNECTION_CLOSE_OK, &ok)
            }
            connectionLost("broker closed the connection: \(close.reply_code) \(text)")
        case SHOPFLEET_BASIC_CANCEL:
            let cancel = method.decoded.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            let tag = CValues.string(cancel.consumer_tag)
            if let consumer = channels[channelID]?.consumers.removeValue(forKey: tag) {
                consumer.continuation.finish(throwing: error(.consumerCancelled,
                    "broker cancelled consumer '\(tag)' of queue '\(consumer.queue)' (queue deleted?)"))
            }
        case SHOPFLEET_CONNECTION_BLOCKED:
            let blocked = method.decoded.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee
            eventContinuation.yield(.blocked(reason: CValues.string(blocked.reason)))
        case SHOPFLEET_CONNECTION_UNBLOCKED:
            eventContinuation.yield(.unblocked)
        default:
            break
        }
    }

    /// Reads the header and body frames that follow a deliver, get-ok or return.
    func readContent(_ channelID: UInt16, exchange: String, routingKey: String) -> AMQPMessage? {
        guard let state else { return nil }
        var message = amqp_message_t()
        let reply = amqp_read_message(state, channelID, &message, 0)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else {
            connectionLost("reading a message body: \(Self.statusText(reply.library_error))")
            return nil
        }
        defer { amqp_destroy_message(&message) }
        return AMQPMessage(body: CValues.array(message.body), properties: CValues.properties(message.properties),
                           exchange: exchange, routingKey: routingKey)
    }

    private func confirm(_ channelID: UInt16, upTo tag: UInt64, multiple: Bool, ok: Bool) {
        guard let channel = channels[channelID] else { return }
        var resolved: [PendingConfirm] = []
        if multiple {
            let split = channel.pending.firstIndex { $0.seq > tag } ?? channel.pending.endIndex
            resolved = Array(channel.pending[..<split])
            channel.pending.removeSubrange(..<split)
        } else if let index = channel.pending.firstIndex(where: { $0.seq == tag }) {
            resolved = [channel.pending.remove(at: index)]
        }
        // A return precedes the ack of the same message: match it by message id, else by tag.
        var returned: Int?
        if ok, let lastReturn = channel.lastReturn {
            returned = resolved.lastIndex { $0.messageID != nil && $0.messageID == lastReturn.message.properties.messageID }
                ?? resolved.lastIndex { $0.seq == tag }
        }
        for (index, pending) in resolved.enumerated() {
            if !ok {
                pending.continuation.resume(throwing: error(.nacked, "broker refused the message (basic.nack); publish it again"))
            } else if index == returned, let lastReturn = channel.lastReturn {
                channel.lastReturn = nil
                pending.continuation.resume(throwing: error(
                    .unroutable,
                    "message to exchange '\(lastReturn.message.exchange)' with routing key '\(lastReturn.message.routingKey)' matched no queue: \(lastReturn.text)",
                    replyCode: lastReturn.code))
            } else {
                pending.continuation.resume()
            }
        }
    }

    /// The broker closed a channel (an error of ours, e.g. 404 or 406): acknowledge it and fail
    /// what was waiting on it. The channel reopens on its next use.
    func channelClosedByBroker(_ channelID: UInt16, code: UInt16, text: String) {
        if let state {
            var ok = amqp_channel_close_ok_t()
            _ = amqp_send_method(state, channelID, SHOPFLEET_CHANNEL_CLOSE_OK, &ok)
        }
        guard let channel = channels[channelID] else { return }
        channel.open = false
        channel.lastReturn = nil
        let closed = error(.channelClosed, "broker closed channel \(channelID): \(text)", replyCode: code)
        for pending in channel.pending { pending.continuation.resume(throwing: closed) }
        channel.pending.removeAll()
        logger.warning("AMQP channel closed by broker", metadata: ["channel": "\(channelID)", "reply": "\(code) \(text)"])
    }

    /// A channel with consumers is reopened at once so that consumption goes on.
    func reopenIfConsuming(_ channelID: UInt16) {
        guard let channel = channels[channelID], !channel.open, !channel.consumers.isEmpty, state != nil else { return }
        do {
            try reopen(channel)
        } catch {
            logger.error("reopening channel failed", metadata: ["channel": "\(channelID)", "error": "\(error)"])
        }
    }

    // MARK: - Errors

    func requireConnected(_ doing: String) throws {
        guard state != nil else {
            if closing.load(ordering: .acquiring) { throw error(.closed, "cannot \(doing): connection closed") }
            throw error(.notConnected, "cannot \(doing): connection is down and recovering")
        }
    }

    /// Waits for the broker's answer to the request just sent, and checks it. What a burst's cork
    /// holds is sent first: the request may be among it, and nothing may wait behind the cork while
    /// the thread waits for the broker (a channel reopened in the middle of a burst).
    func awaitReply(_ state: amqp_connection_state_t, channel channelID: UInt16, doing: String) throws {
        uncork()
        repliesAwaited.add(1, ordering: .relaxed)
        if Self.isCorked(amqp_get_sockfd(state)) { repliesAwaitedCorked.add(1, ordering: .relaxed) }
        try check(amqp_get_rpc_reply(state), channel: channelID, doing: doing)
    }

    /// The one place an RPC reply from rabbitmq-c becomes a Swift error.
    func check(_ reply: amqp_rpc_reply_t, channel channelID: UInt16, doing: String) throws {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == SHOPFLEET_CHANNEL_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let text = CValues.string(close.reply_text)
            channelClosedByBroker(channelID, code: close.reply_code, text: text)
            reopenIfConsuming(channelID)
            throw error(.channelClosed, "\(doing): \(text)", replyCode: close.reply_code)
        case AMQP_RESPONSE_SERVER_EXCEPTION where reply.reply.id == SHOPFLEET_CONNECTION_CLOSE:
            let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            let text = CValues.string(close.reply_text)
            if let state {
                var ok = amqp_connection_close_ok_t()
                _ = amqp_send_method(state, 0, SHOPFLEET_CONNECTION_CLOSE_OK, &ok)
            }
            connectionLost("broker closed the connection: \(close.reply_code) \(text)")
            throw error(.connectionClosed, "\(doing): \(text)", replyCode: close.reply_code)
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            let text = Self.statusText(reply.library_error)
            connectionLost(text)
            throw error(.connectionLost, "\(doing): \(text)")
        default:
            connectionLost("unexpected end of stream")
            throw error(.connectionLost, "\(doing): unexpected reply")
        }
    }

    func error(_ code: AMQPError.Code, _ message: String, replyCode: UInt16? = nil) -> AMQPError {
        AMQPError(code, message, host: configuration.host, port: configuration.port, replyCode: replyCode)
    }

    static func statusText(_ status: Int32) -> String {
        amqp_error_string2(status).map { String(cString: $0) } ?? "status \(status)"
    }

    static func timeval(_ duration: Duration) -> Glibc.timeval {
        let micros = Int(duration.seconds * 1_000_000)
        return Glibc.timeval(tv_sec: micros / 1_000_000, tv_usec: micros % 1_000_000)
    }
}
