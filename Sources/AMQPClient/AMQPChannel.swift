import ClientRuntime
import CRabbitMQ
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A channel of an ``AMQPConnection``. All methods run on the connection's thread. A channel the
/// broker closed (say, a passive declare of a missing queue: 404) reopens on its next use, with its
/// QoS, confirm mode and consumers.
public struct AMQPChannel: Sendable, Hashable {
    public let connection: AMQPConnection
    public let id: UInt16

    public static func == (a: AMQPChannel, b: AMQPChannel) -> Bool { a.connection === b.connection && a.id == b.id }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(connection))
        hasher.combine(id)
    }

    // MARK: Topology

    /// Declares an exchange; `passive` only checks that it exists (404 `.channelClosed` if not).
    public func declareExchange(_ name: String, type: ExchangeType = .topic, durable: Bool = true,
                                autoDelete: Bool = false, internal isInternal: Bool = false, passive: Bool = false,
                                arguments: AMQPTable = [:]) async throws {
        try await rpc("declare exchange '\(name)'") { c, state, pool in
            _ = amqp_exchange_declare(state, id, CValues.bytes(name, pool), CValues.bytes(type.rawValue, pool),
                                      passive ? 1 : 0, durable ? 1 : 0, autoDelete ? 1 : 0, isInternal ? 1 : 0,
                                      CValues.table(arguments, pool))
        }
    }

    public func deleteExchange(_ name: String, ifUnused: Bool = false) async throws {
        try await rpc("delete exchange '\(name)'") { _, state, pool in
            _ = amqp_exchange_delete(state, id, CValues.bytes(name, pool), ifUnused ? 1 : 0)
        }
    }

    public struct QueueInfo: Sendable, Equatable {
        public var name: String
        public var messageCount: UInt32
        public var consumerCount: UInt32
    }

    /// Declares a queue (an empty name asks the broker for one); `passive` only checks that it
    /// exists and reports its counts.
    @discardableResult
    public func declareQueue(_ name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                             passive: Bool = false, arguments: AMQPTable = [:]) async throws -> QueueInfo {
        try await rpc("declare queue '\(name)'") { _, state, pool in
            let ok = amqp_queue_declare(state, id, CValues.bytes(name, pool), passive ? 1 : 0, durable ? 1 : 0,
                                        exclusive ? 1 : 0, autoDelete ? 1 : 0, CValues.table(arguments, pool))
            guard let ok else { return QueueInfo(name: name, messageCount: 0, consumerCount: 0) }
            return QueueInfo(name: CValues.string(ok.pointee.queue), messageCount: ok.pointee.message_count,
                             consumerCount: ok.pointee.consumer_count)
        }
    }

    public func bindQueue(_ queue: String, to exchange: String, routingKey: String, arguments: AMQPTable = [:]) async throws {
        try await rpc("bind queue '\(queue)' to '\(exchange)' with '\(routingKey)'") { _, state, pool in
            _ = amqp_queue_bind(state, id, CValues.bytes(queue, pool), CValues.bytes(exchange, pool),
                                CValues.bytes(routingKey, pool), CValues.table(arguments, pool))
        }
    }

    public func unbindQueue(_ queue: String, from exchange: String, routingKey: String, arguments: AMQPTable = [:]) async throws {
        try await rpc("unbind queue '\(queue)' from '\(exchange)'") { _, state, pool in
            _ = amqp_queue_unbind(state, id, CValues.bytes(queue, pool), CValues.bytes(exchange, pool),
                                  CValues.bytes(routingKey, pool), CValues.table(arguments, pool))
        }
    }

    /// Removes every ready message; returns how many.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> UInt32 {
        try await rpc("purge queue '\(name)'") { _, state, pool in
            amqp_queue_purge(state, id, CValues.bytes(name, pool))?.pointee.message_count ?? 0
        }
    }

    @discardableResult
    public func deleteQueue(_ name: String, ifUnused: Bool = false, ifEmpty: Bool = false) async throws -> UInt32 {
        try await rpc("delete queue '\(name)'") { _, state, pool in
            amqp_queue_delete(state, id, CValues.bytes(name, pool), ifUnused ? 1 : 0, ifEmpty ? 1 : 0)?.pointee.message_count ?? 0
        }
    }

    // MARK: Settings

    /// At most `prefetch` unacknowledged deliveries per consumer on this channel. Re-applied after
    /// a reconnect.
    public func setPrefetch(_ prefetch: UInt16) async throws {
        try await rpc("set prefetch \(prefetch)") { channel, state, _ in
            _ = amqp_basic_qos(state, id, 0, prefetch, 0)
            channel.prefetch = prefetch
        }
    }

    /// Publisher confirms: from now on ``publish(_:exchange:routingKey:properties:mandatory:)`` returns
    /// only once the broker has taken responsibility for the message. Re-enabled after a reconnect.
    public func enableConfirms() async throws {
        try await rpc("enable publisher confirms") { channel, state, _ in
            guard !channel.confirms else { return }
            _ = amqp_confirm_select(state, id)
            channel.confirms = true
        }
    }

    // MARK: Publishing

    /// Publishes a message. With confirms enabled, returns when the broker confirmed it and throws
    /// `.nacked`, `.unroutable` (mandatory and no queue matched), or `.connectionLost` (not confirmed:
    /// publish again). Many publishes may be in flight at once; each caller awaits its own confirm.
    public func publish(_ body: [UInt8], exchange: String = "", routingKey: String,
                        properties: AMQPProperties = AMQPProperties(), mandatory: Bool = false) async throws {
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            queuePublish(body, exchange: exchange, routingKey: routingKey, properties: properties,
                         mandatory: mandatory, waiter: .task(continuation))
        }
    }

    /// Publishes without waiting: returns once the message is queued for the connection's thread,
    /// and `confirmed` is called later on that thread, with nil when the broker confirmed the
    /// message or with the error ``publish(_:exchange:routingKey:properties:mandatory:)`` would
    /// throw. No task waits per message. Keep `confirmed` short: the connection's I/O waits for it.
    public func publish(_ body: [UInt8], exchange: String = "", routingKey: String,
                        properties: AMQPProperties = AMQPProperties(), mandatory: Bool = false,
                        confirmed: @escaping @Sendable ((any Error)?) -> Void) {
        queuePublish(body, exchange: exchange, routingKey: routingKey, properties: properties,
                     mandatory: mandatory, waiter: .callback(confirmed))
    }

    /// Sent with the burst's other outgoing frames (acks, other publishes, from every task that
    /// published meanwhile), in one transmit and one job of the connection's thread.
    private func queuePublish(_ body: [UInt8], exchange: String, routingKey: String, properties: AMQPProperties,
                              mandatory: Bool, waiter: AMQPConnection.ConfirmWaiter) {
        let connection = self.connection
        let id = self.id
        let scheduled = connection.queueOutgoing { outgoing in
            outgoing.publishes.append {
                connection.publishOnThread(id, body: body, exchange: exchange, routingKey: routingKey,
                                           properties: properties, mandatory: mandatory, continuation: waiter)
            }
        }
        if !scheduled {
            waiter.resume(throwing: connection.error(.closed, "connection closed by this process; the message was not sent"))
        }
    }

    public func publish(_ body: String, exchange: String = "", routingKey: String,
                        properties: AMQPProperties = AMQPProperties(), mandatory: Bool = false) async throws {
        try await publish(Array(body.utf8), exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    // MARK: Consuming

    /// Starts a consumer. Deliveries arrive on the returned sequence; with `noAck: false` each must be
    /// acked, nacked or rejected. The consumer survives reconnects (re-consumed with the same tag);
    /// its sequence ends when it is cancelled or the connection is closed.
    public func consume(queue: String, tag: String? = nil, noAck: Bool = false, exclusive: Bool = false,
                        arguments: AMQPTable = [:]) async throws -> AMQPConsumer {
        try await consume(queue: queue, tag: tag, noAck: noAck, exclusive: exclusive, arguments: arguments, handler: nil)
    }

    func consume(queue: String, tag: String?, noAck: Bool, exclusive: Bool, arguments: AMQPTable,
                 handler: (@Sendable (AMQPDelivery) -> Void)?) async throws -> AMQPConsumer {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: AMQPDelivery.self)
        let consumerTag = tag ?? "shopfleet-\(UInt64.random(in: 0...UInt64.max))"
        let consumer = AMQPConnection.ConsumerState(queue: queue, tag: consumerTag, noAck: noAck, exclusive: exclusive,
                                                    arguments: arguments, continuation: continuation, handler: handler)
        let connection = self.connection
        let id = self.id
        do {
            try await connection.thread.submit {
                let channel = try connection.usableChannel(id, doing: "consume from queue '\(queue)'")
                guard channel.consumers[consumerTag] == nil else {
                    throw connection.error(.invalidConfiguration, "consumer tag '\(consumerTag)' is in use on channel \(id)")
                }
                try connection.startConsumer(consumer, on: channel)
                channel.consumers[consumerTag] = consumer
            }
        } catch {
            continuation.finish(throwing: error)
            throw error
        }
        return AMQPConsumer(stream: stream, tag: consumerTag, channel: self)
    }

    /// Stops a consumer; its sequence ends. Unacked deliveries go back to the queue when the
    /// channel closes, or when they are nacked.
    public func cancel(consumerTag: String) async throws {
        try await rpc("cancel consumer '\(consumerTag)'") { channel, state, pool in
            guard let consumer = channel.consumers.removeValue(forKey: consumerTag) else { return }
            _ = amqp_basic_cancel(state, id, CValues.bytes(consumerTag, pool))
            consumer.continuation.finish()
        }
    }

    /// Fetches one message (`basic.get`), or nil when the queue is empty.
    public func get(queue: String, noAck: Bool = false) async throws -> AMQPDelivery? {
        let connection = self.connection
        let id = self.id
        let doing = "get from queue '\(queue)'"
        return try await connection.thread.submit { () -> AMQPDelivery? in
            let channel = try connection.usableChannel(id, doing: doing)
            let state = connection.state!
            let reply = amqp_basic_get(state, id, CValues.bytes(queue, connection.scratch), noAck ? 1 : 0)
            recycle_amqp_pool(connection.scratch)
            try connection.check(reply, channel: id, doing: doing)
            guard reply.reply.id == SHOPFLEET_BASIC_GET_OK else { return nil }
            let ok = reply.reply.decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
            let deliveryTag = ok.delivery_tag
            let redelivered = ok.redelivered != 0
            guard let message = connection.readContent(id, exchange: CValues.string(ok.exchange),
                                                       routingKey: CValues.string(ok.routing_key)) else {
                throw connection.error(.connectionLost, "\(doing): connection lost while reading the message")
            }
            if !noAck { channel.unsettled.append(deliveryTag) }
            return AMQPDelivery(message: message, deliveryTag: deliveryTag, redelivered: redelivered, consumerTag: nil,
                                channel: self, incarnation: channel.incarnation, noAck: noAck)
        }
    }

    /// Closes this channel; it is not reopened.
    public func close() async throws {
        let connection = self.connection
        let id = self.id
        try await connection.thread.submit {
            guard let channel = connection.channels.removeValue(forKey: id) else { return }
            let closed = connection.error(.closed, "channel \(id) closed by this process")
            for pending in channel.pending { pending.continuation.resume(throwing: closed) }
            for consumer in channel.consumers.values { consumer.continuation.finish() }
            if channel.open, let state = connection.state {
                _ = amqp_channel_close(state, id, 200)
            }
        }
    }

    // MARK: -

    /// Runs a synchronous AMQP method on the connection thread and turns its reply into an error
    /// or a result.
    private func rpc<T: Sendable>(
        _ doing: String,
        _ body: @escaping @Sendable (AMQPConnection.ChannelState, amqp_connection_state_t, UnsafeMutablePointer<amqp_pool_t>) throws -> T
    ) async throws -> T {
        let connection = self.connection
        let id = self.id
        return try await connection.thread.submit {
            let channel = try connection.usableChannel(id, doing: doing)
            let state = connection.state!
            defer { recycle_amqp_pool(connection.scratch) }
            let result = try body(channel, state, connection.scratch)
            try connection.awaitReply(state, channel: id, doing: doing)
            return result
        }
    }
}

extension AMQPConnection {
    /// The channel, reopened if the broker had closed it. On the thread.
    func usableChannel(_ id: UInt16, doing: String) throws -> ChannelState {
        try requireConnected(doing)
        guard let channel = channels[id] else { throw error(.closed, "cannot \(doing): channel \(id) is closed") }
        if !channel.open { try reopen(channel) }
        return channel
    }

    func publishOnThread(_ id: UInt16, body: [UInt8], exchange: String, routingKey: String, properties: AMQPProperties,
                         mandatory: Bool, continuation: ConfirmWaiter) {
        let doing = "publish to exchange '\(exchange)' with routing key '\(routingKey)'"
        let channel: ChannelState
        do {
            channel = try usableChannel(id, doing: doing)
        } catch {
            continuation.resume(throwing: error)
            return
        }
        let state = self.state!
        var cProperties = CValues.properties(properties, scratch)
        let exchangeBytes = CValues.bytes(exchange, scratch)
        let keyBytes = CValues.bytes(routingKey, scratch)
        if channel.confirms {
            channel.publishSeq += 1
            channel.pending.append(PendingConfirm(seq: channel.publishSeq, messageID: properties.messageID, continuation: continuation))
        }
        let status = body.withUnsafeBytes { raw in
            amqp_basic_publish(state, id, exchangeBytes, keyBytes, mandatory ? 1 : 0, 0, &cProperties,
                               shopfleet_amqp_bytes(raw.baseAddress, raw.count))
        }
        recycle_amqp_pool(scratch)
        if status != AMQP_STATUS_OK.rawValue {
            if channel.confirms { channel.pending.removeLast() }
            connectionLost("publishing: \(Self.statusText(status))")
            continuation.resume(throwing: error(.connectionLost, "\(doing): \(Self.statusText(status)); publish it again"))
            return
        }
        if !channel.confirms { continuation.resume() }
    }

    enum Settlement: Sendable {
        case ack(multiple: Bool)
        case nack(requeue: Bool, multiple: Bool)
        case reject(requeue: Bool)

        var isSingleAck: Bool {
            if case .ack(multiple: false) = self { return true }
            return false
        }

        var isMultiple: Bool {
            switch self {
            case .ack(let multiple), .nack(_, let multiple): return multiple
            case .reject: return false
            }
        }
    }

    struct PendingSettlement: Sendable {
        var channel: UInt16
        var incarnation: UInt64
        var deliveryTag: UInt64
        var settlement: Settlement
    }

    /// What waits for the next flush of outgoing frames.
    struct Outgoing {
        var settlements: [PendingSettlement] = []
        var publishes: [@Sendable () -> Void] = []
        var isEmpty: Bool { settlements.isEmpty && publishes.isEmpty }
    }

    /// Queues an ack/nack/reject. Settlements wait in one list; the first of a burst schedules a
    /// single job that sends them all, so a consumer acking each message costs no job per ack.
    func settle(_ delivery: AMQPDelivery, _ settlement: Settlement) {
        let pending = PendingSettlement(channel: delivery.channel.id, incarnation: delivery.incarnation,
                                        deliveryTag: delivery.deliveryTag, settlement: settlement)
        queueOutgoing { $0.settlements.append(pending) }
    }

    /// Adds to the outgoing frames; the first of a burst schedules the one job that flushes them.
    /// False when the thread has stopped (nothing will be sent).
    @discardableResult
    func queueOutgoing(_ add: (inout Outgoing) -> Void) -> Bool {
        let first = outgoing.withLock { outgoing in
            let wasEmpty = outgoing.isEmpty
            add(&outgoing)
            return wasEmpty
        }
        guard first else { return true }
        return thread.execute { self.flushOutgoing() }
    }

    /// On the thread: the burst's settlements, then its publishes, with the socket corked so that
    /// they leave in as few TCP segments as fit (on loopback each transmit also costs the broker's
    /// side a wake-up). A publish whose channel must be reopened first waits for the broker's
    /// answers: every such wait (`awaitReply`) uncorks first.
    private func flushOutgoing() {
        let batch = outgoing.withLock { outgoing in
            defer { outgoing = Outgoing() }
            return outgoing
        }
        if batch.settlements.count + batch.publishes.count >= 2, let state {
            corkedSocket = amqp_get_sockfd(state)
            Self.setCork(corkedSocket, true)
        }
        sendSettlements(batch.settlements)
        for publish in batch.publishes { publish() }
        uncork()
    }

    /// Sends what the cork holds. The socket may have been replaced by a reconnect meanwhile: the
    /// one corked is uncorked.
    func uncork() {
        guard corkedSocket >= 0 else { return }
        Self.setCork(corkedSocket, false)
        corkedSocket = -1
    }

    static func isCorked(_ fd: Int32) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, Int32(IPPROTO_TCP), TCP_CORK, &value, &length) == 0 && value != 0
    }

    private static func setCork(_ fd: Int32, _ on: Bool) {
        var value: Int32 = on ? 1 : 0
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// On the thread. A settlement for a channel reopened since its delivery is skipped: the broker
    /// has requeued that message already, and acking the old tag would close the channel.
    ///
    /// A run of single acks on one channel that settles the oldest of its unsettled deliveries goes
    /// out as one ack with `multiple` up to the last of them (the frame the broker would otherwise
    /// get once per message); the run's other acks, and everything else, go out one by one.
    private func sendSettlements(_ batch: [PendingSettlement]) {
        var index = 0
        while index < batch.count {
            let item = batch[index]
            guard let state, let channel = channels[item.channel], channel.open, channel.incarnation == item.incarnation else {
                logger.debug("settling a delivery of an earlier connection is skipped; the broker redelivers it",
                             metadata: ["deliveryTag": "\(item.deliveryTag)"])
                index += 1
                continue
            }
            var end = index
            while end < batch.count, batch[end].channel == item.channel, batch[end].incarnation == item.incarnation,
                  batch[end].settlement.isSingleAck {
                end += 1
            }
            if end - index >= 2 {
                let run = batch[index..<end]
                let acked = Set(run.map(\.deliveryTag))
                var covered = 0
                while covered < channel.unsettled.count, acked.contains(channel.unsettled[covered]) { covered += 1 }
                if covered >= 2 {
                    let upTo = channel.unsettled[covered - 1]
                    guard send(.ack(multiple: true), tag: upTo, on: channel, state: state) else { return }
                    for other in run where other.deliveryTag > upTo {
                        guard send(other.settlement, tag: other.deliveryTag, on: channel, state: state) else { return }
                    }
                    index = end
                    continue
                }
            }
            guard send(item.settlement, tag: item.deliveryTag, on: channel, state: state) else { return }
            index += 1
        }
    }

    /// Sends one settlement and forgets what it settles; false when the connection was lost.
    private func send(_ settlement: Settlement, tag: UInt64, on channel: ChannelState, state: amqp_connection_state_t) -> Bool {
        let status: Int32
        switch settlement {
        case .ack(let multiple):
            status = amqp_basic_ack(state, channel.id, tag, multiple ? 1 : 0)
        case .nack(let requeue, let multiple):
            status = amqp_basic_nack(state, channel.id, tag, multiple ? 1 : 0, requeue ? 1 : 0)
        case .reject(let requeue):
            status = amqp_basic_reject(state, channel.id, tag, requeue ? 1 : 0)
        }
        if status != AMQP_STATUS_OK.rawValue {
            connectionLost("acknowledging: \(Self.statusText(status))")
            return false
        }
        settlementFrames.add(1, ordering: .relaxed)
        if settlement.isMultiple {
            let settled = channel.unsettled.firstIndex { $0 > tag } ?? channel.unsettled.count
            channel.unsettled.removeFirst(settled)
        } else if let at = channel.unsettled.firstIndex(of: tag) {
            channel.unsettled.remove(at: at)
        }
        return true
    }
}

/// One message delivered to a consumer (or fetched with `get`).
public struct AMQPDelivery: Sendable {
    public let message: AMQPMessage
    public let deliveryTag: UInt64
    public let redelivered: Bool
    public let consumerTag: String?
    public let channel: AMQPChannel
    let incarnation: UInt64
    let noAck: Bool

    public var body: [UInt8] { message.body }
    public var properties: AMQPProperties { message.properties }
    public var routingKey: String { message.routingKey }
    public var exchange: String { message.exchange }

    /// Acknowledges (queued to the connection thread; returns at once). A delivery from before a
    /// reconnect is not acked: the broker has already put it back and delivers it again.
    public func ack(multiple: Bool = false) {
        guard !noAck else { return }
        channel.connection.settle(self, .ack(multiple: multiple))
    }

    /// Negative acknowledgement: back to the queue (`requeue`) or to the dead-letter exchange.
    public func nack(requeue: Bool = true, multiple: Bool = false) {
        guard !noAck else { return }
        channel.connection.settle(self, .nack(requeue: requeue, multiple: multiple))
    }

    public func reject(requeue: Bool = true) {
        guard !noAck else { return }
        channel.connection.settle(self, .reject(requeue: requeue))
    }
}

/// The deliveries of one consumer, as an async sequence.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    let stream: AsyncThrowingStream<AMQPDelivery, any Error>
    public let tag: String
    public let channel: AMQPChannel

    public func makeAsyncIterator() -> AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator {
        stream.makeAsyncIterator()
    }

    public func cancel() async throws {
        try await channel.cancel(consumerTag: tag)
    }
}
