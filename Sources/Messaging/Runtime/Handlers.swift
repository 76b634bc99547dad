public import AMQPClient
public import Logging
public import PostgresClient
import Synchronization

/// What a handler gets besides its message: the envelope, the open transaction, a logger with the
/// message's ids, and the outbox. Everything it writes and sends commits together with the inbox
/// row, or not at all.
public final class HandlerContext: Sendable {
    public let envelope: Envelope
    /// The handler's transaction. Do not commit or roll back: the runtime does.
    public let database: PostgresConnection
    let messageLogger: MessageLogger
    /// A logger carrying the message's ids (message, type, queue, attempt, saga, trace).
    public var logger: Logger { messageLogger.logger }
    let schema: String
    let queries: QueryClients?
    /// What the registry's `beforeBatch` returned for the batch this message is handled in (the
    /// rows it locked and read for the handlers, say); nil for a message handled alone.
    public let batchPrepared: (any Sendable)?
    /// What the handler sent, written to the outbox with the COMMIT.
    private let pending = Mutex<[OutboxRecord]>([])

    init(envelope: Envelope, database: PostgresConnection, logger: MessageLogger, schema: String, queries: QueryClients? = nil,
         batchPrepared: (any Sendable)? = nil) {
        self.envelope = envelope
        self.database = database
        self.messageLogger = logger
        self.schema = schema
        self.queries = queries
        self.batchPrepared = batchPrepared
    }

    /// Runs a statement whose result the handler does not need (an INSERT, UPDATE or DELETE) in the
    /// transaction's next round trip, with its next awaited statement or with the COMMIT, instead
    /// of in a round trip of its own. Statements run in the order they were written. If it fails,
    /// that next statement (or the commit) throws its error and the message fails as from any
    /// statement: nothing of the transaction stays. A write alone does not reach the server, and so
    /// does not stop a redelivered message (its inbox row goes with the first round trip): an
    /// effect outside the database that must happen once belongs after an awaited statement.
    public func write(_ sql: String, _ binds: [any PostgresEncodable] = []) throws {
        _ = try database.sendWithNext(PostgresStatement(sql, binds))
    }

    /// Sends a command to its domain's queue, after this handler's transaction commits. Returns
    /// the message id.
    @discardableResult
    public func send<C: Command>(_ command: C, sagaID: String? = nil) async throws -> String {
        try await enqueue(type: C.type, body: try MessageCodec.encode(command), exchange: "", routingKey: C.queue, sagaID: sagaID)
    }

    /// Publishes an event on its domain's topic, after this handler's transaction commits. Returns
    /// the message id.
    @discardableResult
    public func publish<E: Event>(_ event: E, sagaID: String? = nil) async throws -> String {
        try await enqueue(type: E.type, body: try MessageCodec.encode(event), exchange: E.exchange, routingKey: E.type, sagaID: sagaID)
    }

    /// Asks another domain a query over request/reply, now (not after commit). Ask before the
    /// first statement where you can: the transaction's `BEGIN` is sent only with the first one,
    /// so no database connection waits idle in a transaction meanwhile. (A redelivered message
    /// stops at that first statement, where its inbox row goes: a query asked before it may be
    /// asked again, which is harmless; an effect outside the database must come after it.) A
    /// timeout is an error the runtime retries through the tiers.
    public func ask<Q: Query>(_ query: Q, timeout: Duration = .seconds(5)) async throws -> Q.Reply {
        guard let queries else { throw MessagingError("\(Q.type): this worker cannot ask queries") }
        return try await queries.client().ask(query, timeout: timeout, sagaID: envelope.sagaID)
    }

    /// Sends any message to an exchange and routing key, after commit. `sagaID` overrides the one
    /// inherited from the message being handled.
    @discardableResult
    public func enqueue(type: String, body: some Sequence<UInt8>, exchange: String, routingKey: String, sagaID: String? = nil) async throws -> String {
        var envelope = envelope.child(type: type, body: Array(body))
        if let sagaID { envelope.sagaID = sagaID }
        let trace = MessageTracing.outgoingHeaders()
        if let traceparent = trace[Envelope.Header.traceparent] {
            envelope.traceparent = traceparent
            envelope.tracestate = trace[Envelope.Header.tracestate]
        }
        pending.withLock { $0.append(OutboxRecord(id: 0, envelope: envelope, exchange: exchange, routingKey: routingKey)) }
        return envelope.messageID
    }

    /// What the handler sent, to be written with a batch's COMMIT (a batch commits once for all
    /// its handlers).
    func takePending() -> [OutboxRecord] {
        pending.withLock { pending in
            defer { pending.removeAll() }
            return pending
        }
    }

    /// Ends the transaction: writes what the handler sent to the outbox and commits, in one round
    /// trip. Returns the outbox rows, with their ids, for the publisher. The runtime calls it last.
    func commit() async throws -> [OutboxRecord] {
        var records = pending.withLock { $0 }
        let results = try await database.commit(after: OutboxRecord.inserts(records, schema: schema))
        // Committed: if the ids cannot be read, the relay publishes the rows.
        try OutboxRecord.assignIDs(&records, from: results)
        return records
    }
}

/// What a query handler gets: the worker's database pool (read only, by convention) and a logger.
public struct QueryContext: Sendable {
    public let envelope: Envelope
    public let database: PostgresClient
    public let logger: Logger
}

/// What a handler without a transaction gets besides its message.
public struct MessageContext: Sendable {
    public let envelope: Envelope
    let messageLogger: MessageLogger
    /// A logger carrying the message's ids.
    public var logger: Logger { messageLogger.logger }
}

/// What a handler of raw deliveries gets: the delivery as the broker handed it, the open
/// transaction and a logger.
public struct DeliveryContext: Sendable {
    public let message: AMQPMessage
    /// Whether the broker delivered it before (to a consumer that did not ack).
    public let redelivered: Bool
    public let queue: String
    /// The handler's transaction. Do not commit or roll back: the runtime does.
    public let database: PostgresConnection
    public let logger: Logger
}

/// Handlers by message type, each decoding and validating its own message.
public struct HandlerRegistry: Sendable {
    typealias Erased = @Sendable (Envelope, HandlerContext) async throws -> Void
    typealias ErasedQuery = @Sendable (Envelope, QueryContext) async throws -> [UInt8]
    typealias ErasedPlain = @Sendable (Envelope, MessageLogger) async throws -> Void
    typealias ErasedResponder = @Sendable (Envelope, HandlerContext) async throws -> [UInt8]

    private(set) var handlers: [String: Erased] = [:]
    /// Types whose handler always runs in a transaction of its own, never in a batch.
    private(set) var alone: Set<String> = []
    private(set) var plain: [String: ErasedPlain] = [:]
    private(set) var queries: [String: ErasedQuery] = [:]
    private(set) var responders: [String: ErasedResponder] = [:]
    private var everyDelivery: (@Sendable (DeliveryContext) async throws -> Void)?
    /// The queue whose deliveries `everyDelivery` takes; nil: every queue.
    private var everyDeliveryQueue: String?
    /// What a batch runs before its handlers (``beforeBatch(_:)``).
    private(set) var batchPreparation: (@Sendable ([Envelope], PostgresConnection) async throws -> (any Sendable)?)?

    public init() {}

    /// Runs in a batch's transaction before its handlers, with the batch's messages not handled
    /// before: for taking the row locks that those handlers will take, all at once and in one
    /// order. Without it two batches that share rows can deadlock: each holds the rows of its
    /// first messages and waits for the other's, until the batch lock timeout sends both back to
    /// be handled one message at a time. A message handled alone takes its locks itself. What it
    /// returns reaches each of the batch's handlers as ``HandlerContext/batchPrepared`` (rows it
    /// read with their locks, so that each handler need not read its own in a round trip of its
    /// own); return nil for nothing.
    public mutating func beforeBatch(_ prepare: @escaping @Sendable (_ messages: [Envelope], _ database: PostgresConnection) async throws -> (any Sendable)?) {
        precondition(batchPreparation == nil, "two beforeBatch functions")
        batchPreparation = prepare
    }

    /// Handles `M` inside the message's transaction. Throw ``PermanentFailure`` for what retrying
    /// cannot fix; any other error is retried through the tiers.
    ///
    /// `alone`: never in a batch with other messages. For a handler whose effect outside the
    /// database (an email sent) a batch's rollback would repeat: a batch in which another message
    /// fails is rolled back and each of its messages handled again alone.
    public mutating func on<M: Message>(_ type: M.Type, alone: Bool = false,
                                        _ handler: @escaping @Sendable (M, HandlerContext) async throws -> Void) {
        precondition(!isRegistered(M.type), "two handlers for \(M.type)")
        if alone { self.alone.insert(M.type) }
        let read = Self.reader(M.self)
        handlers[M.type] = { envelope, context in
            try await handler(try read(envelope), context)
        }
    }

    /// Handles `M` without a transaction, inbox or outbox: for handlers whose effect lies outside
    /// the database and is idempotent by itself (a cache refresh, a metric). A redelivery runs the
    /// handler again.
    public mutating func onWithoutTransaction<M: Message>(_ type: M.Type, _ handler: @escaping @Sendable (M, MessageContext) async throws -> Void) {
        precondition(!isRegistered(M.type), "two handlers for \(M.type)")
        let read = Self.reader(M.self)
        plain[M.type] = { envelope, logger in
            try await handler(try read(envelope), MessageContext(envelope: envelope, messageLogger: logger))
        }
    }

    /// Decodes `M` and, when it is ``Validatable``, validates it. Whether it is gets looked up once,
    /// here, not per message.
    private static func reader<M: Message>(_ type: M.Type) -> @Sendable (Envelope) throws -> M {
        let validates = M.self is any Validatable.Type
        return { envelope in
            let message = try MessageCodec.decode(M.self, from: envelope.body, typeName: M.type)
            if validates, let validatable = message as? any Validatable {
                do { try validatable.validate() } catch {
                    throw PermanentFailure("validation", "\(M.type) is not valid: \(error)")
                }
            }
            return message
        }
    }

    /// Answers `Q` over request/reply. Queries have no transaction, no inbox and no outbox: they
    /// must not change anything.
    public mutating func answer<Q: Query>(_ type: Q.Type, _ handler: @escaping @Sendable (Q, QueryContext) async throws -> Q.Reply) {
        precondition(!isRegistered(Q.type), "two handlers for \(Q.type)")
        let read = Self.reader(Q.self)
        queries[Q.type] = { envelope, context in
            Array(try MessageCodec.encode(try await handler(try read(envelope), context)))
        }
    }

    /// Answers `R` over request/reply like a query, but in a transaction with the inbox and the
    /// outbox, as a command is handled: for a request that changes something and whose caller
    /// needs the outcome (register a customer, start a session). Any error is an error reply; a
    /// request is never retried, since its caller is waiting.
    public mutating func respond<R: Query>(_ type: R.Type, _ handler: @escaping @Sendable (R, HandlerContext) async throws -> R.Reply) {
        precondition(!isRegistered(R.type), "two handlers for \(R.type)")
        let read = Self.reader(R.self)
        responders[R.type] = { envelope, context in
            Array(try MessageCodec.encode(try await handler(try read(envelope), context)))
        }
    }

    /// Handles every delivery as the broker hands it, before and instead of reading an envelope:
    /// for a consumer of messages that need not be well formed (the dead-letter store). The handler
    /// runs in a transaction without inbox or outbox (it deduplicates by itself) and must accept
    /// anything: an error other than the database being unreachable puts the message back on its
    /// queue after a pause, since dead-lettering it could loop.
    ///
    /// `queue`: only that queue's deliveries, the worker's other queues carrying messages for the
    /// other handlers (the dead-letter store answers operators' queries beside its store queue).
    /// Nil: every delivery of every queue, and no other handler.
    public mutating func onEveryDelivery(queue: String? = nil, _ handler: @escaping @Sendable (DeliveryContext) async throws -> Void) {
        precondition(everyDelivery == nil && (queue != nil || types.isEmpty), "a worker of raw deliveries on every queue has no other handler")
        everyDelivery = handler
        everyDeliveryQueue = queue
    }

    /// The handler of raw deliveries for `queue`, if that queue's deliveries are raw.
    func everyDelivery(on queue: String) -> (@Sendable (DeliveryContext) async throws -> Void)? {
        everyDeliveryQueue == nil || everyDeliveryQueue == queue ? everyDelivery : nil
    }

    private func isRegistered(_ type: String) -> Bool {
        precondition(everyDelivery == nil || everyDeliveryQueue != nil, "a worker of raw deliveries on every queue has no other handler")
        return handlers[type] != nil || queries[type] != nil || plain[type] != nil || responders[type] != nil
    }

    public var types: [String] { (Array(handlers.keys) + Array(queries.keys) + Array(plain.keys) + Array(responders.keys)).sorted() }
}
