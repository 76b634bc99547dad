public import AMQPClient
import ClientRuntime
import FoundationEssentials
public import Logging
import Metrics
public import PostgresClient
public import ServiceLifecycle
import Synchronization
import Tracing

/// How a worker consumes and handles. Defaults suit a small pod.
public struct WorkerOptions: Sendable {
    /// The service (domain) name: logs, metrics, the AMQP connection name.
    public var service: String
    /// The PostgreSQL schema holding the service's tables, inbox and outbox.
    public var schema: String
    public var queues: [String]
    /// Unacknowledged deliveries the broker may hand each consumer. Each consumer handles one
    /// delivery at a time, so anything beyond the one in hand only waits; and RabbitMQ 3.10's
    /// quorum queues count every delivery a dead consumer held as an attempt, started or not
    /// (see `docs/chaos.md`): with more, a worker killed a few times pushes healthy messages to
    /// the delivery limit.
    public var prefetch: UInt16 = 1
    /// Handlers running at once per queue.
    public var concurrency: Int = 8
    /// Messages one consumer handles in one transaction (group commit): the deliveries already
    /// waiting in its prefetch, up to this many, share one `BEGIN … COMMIT`, one burst of outbox
    /// publishes and one multiple ack. 1 handles each message in a transaction of its own. With
    /// more than 1 the consumer's prefetch is at least this.
    public var batchSize: Int = 1
    /// How long a consumer waits for more deliveries once it has one, before handling what it has
    /// (zero: only what is already there, so no message waits for a batch to fill).
    public var batchWait: Duration = .zero
    /// How long a batch's transaction waits for a row lock before it gives up and its messages
    /// are handled one transaction each: two batches that lock the same rows in opposite orders
    /// would otherwise deadlock until PostgreSQL's `deadlock_timeout` (1 s) broke the tie.
    public var batchLockTimeout: Duration = Self.defaultBatchLockTimeout
    /// How long the handlers' `beforeBatch` waits for its row locks. It takes them in one order,
    /// and holds nothing else a batch waits for, so it queues behind other batches and cannot
    /// deadlock with them. (A handler after it still can wait on a transaction that takes the
    /// same rows in another order: inventory's expiry job and a message handled alone lock a
    /// reservation before its stock. That wait has `batchLockTimeout`, as before.)
    public var beforeBatchLockTimeout: Duration = Self.defaultBeforeBatchLockTimeout
    /// ``batchLockTimeout`` and ``beforeBatchLockTimeout`` unless set; a worker process's settings
    /// and the configuration keys' defaults (`SHOPFLEET_WORKER_BATCH_LOCK_TIMEOUT`,
    /// `SHOPFLEET_WORKER_BATCH_FIRST_LOCKS_TIMEOUT`) are these too.
    public static let defaultBatchLockTimeout: Duration = .milliseconds(100)
    public static let defaultBeforeBatchLockTimeout: Duration = .seconds(5)
    /// How long SIGTERM may take: stop consuming, finish handlers, flush the outbox. Shorter than
    /// a pod's 30 s grace period.
    public var shutdownDeadline: Duration = Self.defaultShutdownDeadline
    /// ``shutdownDeadline`` unless set: the lock timeouts a worker's configuration may give must
    /// be shorter, or a batch waiting for a lock could hold up a stop.
    public static let defaultShutdownDeadline: Duration = .seconds(20)
    /// How often the relay looks for outbox rows a crash left behind.
    public var relayInterval: Duration = .seconds(1)
    /// Rows younger than this are still being published by their handler; the relay leaves them.
    public var relayGrace: Duration = .seconds(5)
    /// Inbox rows are kept this long (outbox rows go once the broker confirmed them).
    public var retention: Duration = .seconds(7 * 24 * 3600)

    public init(service: String, schema: String, queues: [String]) {
        self.service = service
        self.schema = schema
        self.queues = queues
    }
}

/// Fault-injection points, for tests that kill a worker at the worst moments.
public struct WorkerHooks: Sendable {
    /// After the handler's transaction committed, before the delivery is acked.
    public var afterCommit: (@Sendable (Envelope) async -> Void)?
    /// After the delivery was acked, before the handler's outbox rows are published.
    public var afterAck: (@Sendable (Envelope) async -> Void)?
    public init() {}
}

/// What `/readyz` reports: connected to both servers and consuming.
public final class WorkerHealth: Sendable {
    let consuming = Atomic<Bool>(false)
    let databaseUp = Atomic<Bool>(true)
    let brokerUp = Atomic<Bool>(false)
    let lastProblem = Mutex<String?>(nil)

    public init() {}

    public var isReady: Bool {
        consuming.load(ordering: .relaxed) && databaseUp.load(ordering: .relaxed) && brokerUp.load(ordering: .relaxed)
    }

    /// Why the worker is not ready, or nil when it is.
    public var problem: String? {
        if !brokerUp.load(ordering: .relaxed) { return "not connected to RabbitMQ" }
        if !databaseUp.load(ordering: .relaxed) { return "PostgreSQL unreachable: \(lastProblem.withLock { $0 } ?? "")" }
        if !consuming.load(ordering: .relaxed) { return "not consuming" }
        return nil
    }

    func database(_ up: Bool, _ problem: String? = nil) {
        databaseUp.store(up, ordering: .relaxed)
        if let problem { lastProblem.withLock { $0 = problem } }
    }
}

/// A domain worker: consumes its queues, runs each message's handler in a transaction with the
/// inbox and outbox, publishes what the handler sent, then acks. Retries, dead letters and
/// request/reply answers are handled here; the domain writes only handlers.
public final class Worker: Service, Sendable {
    let options: WorkerOptions
    let topology: Topology
    let handlers: HandlerRegistry
    let jobs: [ScheduledJob]
    let amqp: AMQPConnection
    let queries: QueryClients
    let database: PostgresClient
    let logger: Logger
    let hooks: WorkerHooks
    public let health: WorkerHealth
    private let consumers = Mutex<[AMQPConsumer]>([])
    private let metrics = MessageMetricsCache()
    private let stopping = Atomic<Bool>(false)
    private let batchFallbacks: Counter
    private let batches: Counter
    private let batchedMessages: Counter
    /// `lock_timeout` of a batch's transaction, as PostgreSQL takes it.
    private let batchLockTimeout: String
    /// `lock_timeout` of the registry's `beforeBatch`.
    private let beforeBatchLockTimeout: String

    public init(options: WorkerOptions, topology: Topology, handlers: HandlerRegistry, jobs: [ScheduledJob] = [],
                amqp: AMQPConnection, database: PostgresClient, logger: Logger, hooks: WorkerHooks = WorkerHooks(),
                health: WorkerHealth = WorkerHealth()) {
        self.options = options
        self.topology = topology
        self.handlers = handlers
        self.jobs = jobs
        self.amqp = amqp
        self.queries = QueryClients(connection: amqp)
        self.database = database
        self.logger = logger
        self.hooks = hooks
        self.health = health
        self.batchFallbacks = Counter(label: "shopfleet_batch_fallbacks_total", dimensions: [("service", options.service)])
        self.batches = Counter(label: "shopfleet_batches_total", dimensions: [("service", options.service)])
        self.batchedMessages = Counter(label: "shopfleet_batched_messages_total", dimensions: [("service", options.service)])
        self.batchLockTimeout = "\(max(1, options.batchLockTimeout.milliseconds))ms"
        self.beforeBatchLockTimeout = "\(max(1, options.beforeBatchLockTimeout.milliseconds))ms"
    }

    /// Consumes until graceful shutdown (SIGTERM), then finishes in-flight handlers, flushes the
    /// outbox and returns.
    public func run() async throws {
        let publisher = try await amqp.openChannel()
        try await publisher.enableConfirms()
        let logger = self.logger
        let outbox = OutboxPublisher(schema: options.schema, channel: publisher, database: database) { failure in
            logger.warning("relay: some outbox rows were not published", metadata: ["error": .string(failure.description)])
        }
        health.brokerUp.store(amqp.isConnected, ordering: .relaxed)

        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await self.watchConnection() }
                group.addTask { await self.relayLoop(outbox) }
                let pipeline = OutboxPipeline(publisher: outbox, logger: self.logger)
                try await withThrowingTaskGroup(of: Void.self) { pipelineGroup in
                    let published = Counter(label: "shopfleet_outbox_published_total", dimensions: [("service", self.options.service)])
                    pipelineGroup.addTask { await pipeline.run { published.increment(by: $0) } }
                    defer { pipeline.finish() }
                    try await withThrowingTaskGroup(of: Void.self) { work in
                        for job in self.jobs {
                            work.addTask { await self.jobLoop(job, pipeline: pipeline) }
                        }
                        work.addTask { try await self.consumeAll(publisher: publisher, pipeline: pipeline) }
                        // The job loops run until cancelled: the first to end is consuming.
                        try await work.next()
                        work.cancelAll()
                    }
                    // Every handler has finished: let the pipeline publish what they sent.
                    self.health.consuming.store(false, ordering: .relaxed)
                    pipeline.finish()
                    try await pipelineGroup.waitForAll()
                }
                // Then whatever else is unpublished (a failed publish, an earlier crash).
                do {
                    let flushed = try await outbox.relay(grace: .zero)
                    self.logger.info("stopped consuming; in-flight handlers finished, outbox flushed",
                                     metadata: ["relayed_at_stop": .stringConvertible(flushed)])
                } catch {
                    self.logger.error("outbox flush failed; the relay of another replica or the next start publishes the rows",
                                      metadata: ["error": .string("\(error)")])
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.stopping.store(true, ordering: .releasing)
            Task { await self.stopConsuming() }
        }
        await queries.close()
        try? await publisher.close()
    }

    /// Runs a scheduled job every `job.every` until cancelled; a failed run is logged and the
    /// next one tries again.
    private func jobLoop(_ job: ScheduledJob, pipeline: OutboxPipeline) async {
        var jobLogger = logger
        jobLogger[metadataKey: "job"] = .string(job.name)
        let context = JobContext(database: database, logger: jobLogger, job: job.name, service: options.service,
                                 schema: options.schema, pipeline: pipeline, queries: queries)
        while !Task.isCancelled {
            do {
                try await job.body(context)
            } catch let error as PostgresError where Self.isInfrastructure(error) {
                health.database(false, error.description)
                jobLogger.warning("job: database unavailable", metadata: ["error": .string(error.description)])
            } catch is CancellationError {
                return
            } catch {
                jobLogger.error("job failed; it runs again on its next tick", metadata: ["error": .string("\(error)")])
            }
            try? await Task.sleep(for: job.every)
        }
    }

    /// Starts `concurrency` consumers per queue, each handling its deliveries one at a time
    /// (competing consumers inside the process, with no task per message), and returns when every
    /// one has ended.
    private func consumeAll(publisher: AMQPChannel, pipeline: OutboxPipeline) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for queue in options.queues {
                let inFlight = InFlightGauge(service: options.service, queue: queue)
                for index in 0..<max(1, options.concurrency) {
                    let channel = try await amqp.openChannel()
                    try await channel.setPrefetch(options.batchSize > 1 ? max(options.prefetch, UInt16(clamping: options.batchSize)) : options.prefetch)
                    let consumer = try await channel.consume(
                        queue: queue, tag: "\(options.service)-\(queue)-\(index)-\(UUIDv7.generate().suffix(12))")
                    consumers.withLock { $0.append(consumer) }
                    group.addTask {
                        await self.consumeLoop(consumer, queue: queue, publisher: publisher, pipeline: pipeline, inFlight: inFlight)
                    }
                }
            }
            health.consuming.store(true, ordering: .relaxed)
            logger.info("consuming", metadata: ["queues": .string(options.queues.joined(separator: ",")),
                                                "prefetch": .stringConvertible(options.prefetch),
                                                "concurrency": .stringConvertible(options.concurrency),
                                                "batch": .stringConvertible(options.batchSize)])
            if stopping.load(ordering: .acquiring) { await stopConsuming() }
            try await group.waitForAll()
        }
    }

    /// Cancels every consumer: no new deliveries; those in flight finish, then `run()` flushes the
    /// outbox and returns. What graceful shutdown does; for embedding a worker without signals.
    public func stopConsuming() async {
        let consumers = self.consumers.withLock { $0 }
        for consumer in consumers {
            do { try await consumer.cancel() } catch {
                // The channel or connection is gone: the broker has dropped that consumer already.
                logger.warning("cancelling a consumer failed", metadata: ["tag": .string(consumer.tag), "error": .string("\(error)")])
            }
        }
        logger.info("consumers cancelled; in-flight handlers finish, then the outbox is flushed",
                    metadata: ["consumers": .stringConvertible(consumers.count)])
    }

    private func watchConnection() async {
        for await event in amqp.events {
            switch event {
            case .disconnected(let reason):
                health.brokerUp.store(false, ordering: .relaxed)
                logger.warning("lost the broker; reconnecting", metadata: ["reason": .string(reason)])
            case .recovered(let attempts):
                health.brokerUp.store(true, ordering: .relaxed)
                logger.info("broker connection recovered", metadata: ["attempts": .stringConvertible(attempts)])
            default:
                break
            }
            if Task.isCancelled { return }
        }
    }

    private func relayLoop(_ outbox: OutboxPublisher) async {
        let lag = Gauge(label: "shopfleet_outbox_lag_seconds", dimensions: [("service", options.service)])
        let relayedTotal = Counter(label: "shopfleet_outbox_relayed_total", dimensions: [("service", options.service)])
        var lastPrune = ContinuousClock.now - .seconds(3600)
        while !Task.isCancelled {
            do {
                let relayed = try await outbox.relay(grace: options.relayGrace)
                if relayed > 0 {
                    relayedTotal.increment(by: relayed)
                    logger.info("relay published outbox rows left behind", metadata: ["count": .stringConvertible(relayed)])
                }
                lag.record(try await outbox.lag())
                if ContinuousClock.now - lastPrune > .seconds(600) {
                    try await outbox.prune(retention: options.retention)
                    lastPrune = .now
                }
                health.database(true)
            } catch let error as PostgresError where Self.isInfrastructure(error) {
                health.database(false, error.description)
                logger.warning("relay: database unavailable", metadata: ["error": .string(error.description)])
            } catch {
                logger.warning("relay pass failed", metadata: ["error": .string("\(error)")])
            }
            try? await Task.sleep(for: options.relayInterval)
        }
    }

    /// Handles a consumer's deliveries one at a time until it ends.
    ///
    /// The loop and its handlers run on the AMQP connection's thread (task executor preference):
    /// a delivery reaches its handler, and the handler's ack and publishes reach the connection,
    /// without waking another thread. A handler's transaction runs on its PostgreSQL connection's
    /// thread; nothing here blocks.
    private func consumeLoop(_ consumer: AMQPConsumer, queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline,
                             inFlight: InFlightGauge) async {
        do {
            try await withTaskExecutorPreference(amqp.executor) {
                if options.batchSize > 1 {
                    return try await consumeBatches(consumer, queue: queue, publisher: publisher, pipeline: pipeline, inFlight: inFlight)
                }
                for try await delivery in consumer {
                    inFlight.begin()
                    await process(delivery, queue: queue, publisher: publisher, pipeline: pipeline)
                    inFlight.end()
                }
            }
        } catch {
            logger.error("consumer ended", metadata: ["queue": .string(queue), "error": .string("\(error)")])
        }
    }

    /// The consumer's deliveries, a batch at a time: whatever has arrived (up to `batchSize`,
    /// after waiting `batchWait` for more) is handled together.
    private func consumeBatches(_ consumer: AMQPConsumer, queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline,
                                inFlight: InFlightGauge) async throws {
        let buffer = DeliveryBuffer()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await delivery in consumer { buffer.put(delivery) }
                    buffer.finish(nil)
                } catch {
                    buffer.finish(error)
                }
            }
            while let batch = try await buffer.take(max: options.batchSize, wait: options.batchWait) {
                inFlight.begin(batch.count)
                await process(batch: batch, queue: queue, publisher: publisher, pipeline: pipeline)
                inFlight.end(batch.count)
            }
            try await group.waitForAll()
        }
    }

    // MARK: - A batch of deliveries

    /// Handles deliveries in the order they came: runs of messages for transactional handlers in
    /// one transaction each; anything else (a query, a request, an undecodable message, a handler
    /// without a transaction or registered to run `alone`) alone, as
    /// ``process(_:queue:publisher:pipeline:)`` does.
    func process(batch deliveries: [AMQPDelivery], queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline) async {
        var run: [BatchItem] = []
        for delivery in deliveries {
            let envelope = handlers.everyDelivery(on: queue) == nil ? try? Envelope(delivery: delivery.message) : nil
            if let envelope, envelope.replyTo == nil, let handler = handlers.handlers[envelope.type], !handlers.alone.contains(envelope.type) {
                run.append(BatchItem(delivery: delivery, envelope: envelope, handler: handler,
                                     logger: MessageLogger(base: logger, envelope: envelope, queue: queue)))
                continue
            }
            await handle(run, queue: queue, publisher: publisher, pipeline: pipeline)
            run.removeAll()
            if let envelope {
                await process(delivery, envelope: envelope, queue: queue, publisher: publisher, pipeline: pipeline)
            } else {
                await process(delivery, queue: queue, publisher: publisher, pipeline: pipeline)
            }
        }
        await handle(run, queue: queue, publisher: publisher, pipeline: pipeline)
    }

    struct BatchItem {
        var delivery: AMQPDelivery
        var envelope: Envelope
        var handler: HandlerRegistry.Erased
        var logger: MessageLogger
    }

    /// One transaction for every message of `items`: their inbox rows in one statement (a message
    /// handled before is left out, and acked without effect), the registry's `beforeBatch` (the
    /// batch's row locks in one order), each handler in turn, every outbox
    /// row with the COMMIT; then the acks and the publishes. If any handler fails, or a row lock
    /// takes longer than `batchLockTimeout`, nothing of the batch stays and each message is
    /// handled again alone, so that only the failing one takes its retry path.
    private func handle(_ items: [BatchItem], queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline) async {
        if items.isEmpty { return }
        if items.count == 1 {
            return await process(items[0].delivery, envelope: items[0].envelope, queue: queue, publisher: publisher, pipeline: pipeline)
        }
        for item in items { metrics(queue: queue, type: item.envelope.type).consumed.increment() }
        let started = ContinuousClock.now
        let schema = quoteIdentifier(options.schema)
        let outcome = await committing(started: started, warn: { logger.warning("\($0)", metadata: $1) }) {
            try await database.transaction { tx -> [[OutboxRecord]?] in
                _ = try tx.sendWithNext(Self.lockTimeout(batchLockTimeout))
                let fresh = try await tx.query("""
                    INSERT INTO \(schema).inbox (message_id, type, queue)
                    SELECT id, type, $3 FROM unnest($1::text[], $2::text[]) AS m(id, type)
                    ON CONFLICT (message_id) DO NOTHING RETURNING message_id
                    """, [items.map(\.envelope.messageID), items.map(\.envelope.type), queue])
                var unhandled = Set<String>()
                for index in 0..<fresh.count { unhandled.insert(try fresh[index].decode(String.self, 0)) }
                var prepared: (any Sendable)?
                if let beforeBatch = handlers.batchPreparation, !unhandled.isEmpty {
                    // It takes its locks in one order, so it waits for other batches rather than
                    // deadlocking with them: it may wait longer than the handlers after it.
                    var first = unhandled  // a copy later in the batch is left out
                    let messages = items.map(\.envelope).filter { first.remove($0.messageID) != nil }
                    _ = try tx.sendWithNext(Self.lockTimeout(beforeBatchLockTimeout))
                    prepared = try await beforeBatch(messages, tx)
                    _ = try tx.sendWithNext(Self.lockTimeout(batchLockTimeout))
                }
                var sent: [[OutboxRecord]?] = []
                for item in items {
                    // Handled before, or a copy of one earlier in this batch.
                    guard unhandled.remove(item.envelope.messageID) != nil else {
                        sent.append(nil)
                        continue
                    }
                    let context = HandlerContext(envelope: item.envelope, database: tx, logger: item.logger, schema: options.schema,
                                                 queries: queries, batchPrepared: prepared)
                    try await inSpan(item.envelope, queue: queue) { try await item.handler(item.envelope, context) }
                    sent.append(context.takePending())
                }
                // Every handler's rows in one INSERT (up to OutboxRecord.rowsPerInsert rows each).
                var records = sent.flatMap { $0 ?? [] }
                let results = try await tx.commit(after: OutboxRecord.inserts(records, schema: options.schema))
                try OutboxRecord.assignIDs(&records, from: results)
                var next = records.startIndex
                for index in sent.indices where sent[index] != nil {
                    let count = sent[index]!.count
                    sent[index] = Array(records[next..<next + count])
                    next += count
                }
                return sent
            }
        }
        switch outcome {
        case nil:
            return  // the broker connection is gone or shutdown's deadline passed: the deliveries come back
        case .success(let sent):
            batches.increment()
            batchedMessages.increment(by: items.count)
            var records: [OutboxRecord] = []
            for (item, itemRecords) in zip(items, sent) {
                let metrics = self.metrics(queue: queue, type: item.envelope.type)
                metrics.recordDuration(since: started)
                if itemRecords == nil {
                    metrics.duplicate.increment()
                    item.logger.info("duplicate delivery: already handled, acking without effect")
                }
                await hooks.afterCommit?(item.envelope)
                await acknowledge(item.delivery, item.envelope, metrics)
                records += itemRecords ?? []
            }
            if !records.isEmpty { await pipeline.submit(records) }
        case .failure(let error):
            batchFallbacks.increment()
            logger.info("a batch failed; handling its messages one at a time",
                        metadata: ["queue": .string(queue), "messages": .stringConvertible(items.count), "error": .string("\(error)")])
            for item in items {
                await process(item.delivery, envelope: item.envelope, queue: queue, publisher: publisher, pipeline: pipeline)
            }
        }
    }

    /// Sets the transaction's `lock_timeout` (a PostgreSQL interval: "100ms").
    private static func lockTimeout(_ value: String) -> PostgresStatement {
        PostgresStatement("SELECT set_config('lock_timeout', $1, true)", [value])
    }

    // MARK: - One delivery

    func process(_ delivery: AMQPDelivery, queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline) async {
        if let handler = handlers.everyDelivery(on: queue) {
            return await processRaw(delivery, queue: queue, handler: handler)
        }
        let envelope: Envelope
        do {
            envelope = try Envelope(delivery: delivery.message)
        } catch {
            metrics(queue: queue, type: "(none)").consumed.increment()
            await deadLetter(delivery, queue: queue, type: delivery.properties.type ?? "unknown", failure: error, publisher: publisher)
            return
        }
        await process(delivery, envelope: envelope, queue: queue, publisher: publisher, pipeline: pipeline)
    }

    /// One delivery whose envelope was read already (a batch reads it to sort its messages).
    func process(_ delivery: AMQPDelivery, envelope: Envelope, queue: String, publisher: AMQPChannel, pipeline: OutboxPipeline) async {
        let logger = MessageLogger(base: self.logger, envelope: envelope, queue: queue)
        let metrics = self.metrics(queue: queue, type: envelope.type)
        metrics.consumed.increment()

        // A request whose caller stopped waiting: nobody reads the answer, and nobody needs to look
        // at it either (it is not a dead letter). Its caller got a timeout and may ask again.
        if envelope.replyTo != nil, envelope.expired() {
            Counter(label: "shopfleet_requests_expired_total", dimensions: [("queue", queue), ("type", envelope.type)]).increment()
            logger.info("request expired before it was handled (its caller stopped waiting); dropped")
            delivery.ack()
            return
        }

        if let query = handlers.queries[envelope.type] {
            await answer(delivery, envelope: envelope, publisher: publisher, logger: logger) {
                try await query(envelope, QueryContext(envelope: envelope, database: self.database, logger: logger.logger))
            }
            return
        }
        if let responder = handlers.responders[envelope.type] {
            await answer(delivery, envelope: envelope, publisher: publisher, logger: logger) {
                let (reply, records) = try await self.respondInTransaction(envelope, queue: queue, responder: responder, logger: logger)
                await self.hooks.afterCommit?(envelope)
                if !records.isEmpty { await pipeline.submit(records) }
                return reply
            }
            return
        }
        if let handler = handlers.plain[envelope.type] {
            let started = ContinuousClock.now
            do {
                try await inSpan(envelope, queue: queue) { try await handler(envelope, logger) }
                metrics.recordDuration(since: started)
                await acknowledge(delivery, envelope, metrics)
            } catch {
                await fail(delivery, envelope: envelope, queue: queue, failure: error, publisher: publisher, logger: logger)
            }
            return
        }
        guard let handler = handlers.handlers[envelope.type] else {
            await deadLetter(delivery, queue: queue, type: envelope.type,
                             failure: PermanentFailure("unknown-type", "no handler for type '\(envelope.type)' in \(options.service)"),
                             publisher: publisher, logger: logger)
            return
        }

        let started = ContinuousClock.now
        let outcome = await committing(started: started, warn: { logger.warning("\($0)", metadata: $1) }) {
            try await inSpan(envelope, queue: queue) {
                try await handleInTransaction(envelope, queue: queue, handler: handler, logger: logger)
            }
        }
        switch outcome {
        case nil:
            return
        case .success(let records):
            metrics.recordDuration(since: started)
            if records == nil {
                metrics.duplicate.increment()
                logger.info("duplicate delivery: already handled, acking without effect")
            }
            // The effects and the outbox rows are committed: the ack need not wait for the
            // publish, which the pipeline does (or, after a crash, the relay).
            await hooks.afterCommit?(envelope)
            await acknowledge(delivery, envelope, metrics)
            if let records, !records.isEmpty { await pipeline.submit(records) }
        case .failure(let error):
            await fail(delivery, envelope: envelope, queue: queue, failure: error, publisher: publisher, logger: logger)
        }
    }

    /// Runs `transaction` until it commits or fails for a reason of the message's own. While the
    /// database is unreachable the message is not the problem: it stays unacked and the
    /// transaction is tried again with backoff (if the worker dies meanwhile, the broker redelivers
    /// it). Nil when the worker gives up on it: the broker connection is gone (the delivery comes
    /// back), or shutdown's deadline passed.
    private func committing<T>(started: ContinuousClock.Instant, warn: (String, Logger.Metadata) -> Void,
                               _ transaction: () async throws -> T) async -> Result<T, any Error>? {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        while true {
            do {
                let value = try await transaction()
                health.database(true)
                return .success(value)
            } catch let error as PostgresError where Self.isInfrastructure(error) {
                health.database(false, error.description)
                if !amqp.isConnected || stopping.load(ordering: .acquiring) && ContinuousClock.now - started > options.shutdownDeadline {
                    return nil
                }
                warn("database unavailable; will retry the message", ["error": .string(error.description)])
                try? await Task.sleep(for: backoff.next())
            } catch {
                return .failure(error)
            }
        }
    }

    /// A delivery for a handler of raw deliveries: its transaction, then the ack. The database being
    /// down keeps the message (unacked) while the worker waits; any other error gives it back to
    /// the queue after a pause.
    private func processRaw(_ delivery: AMQPDelivery, queue: String, handler: @Sendable (DeliveryContext) async throws -> Void) async {
        let metrics = self.metrics(queue: queue, type: delivery.properties.type ?? "(none)")
        metrics.consumed.increment()
        let started = ContinuousClock.now
        let outcome = await committing(started: started, warn: { logger.warning("\($0)", metadata: $1) }) {
            try await database.transaction { tx in
                try await handler(DeliveryContext(message: delivery.message, redelivered: delivery.redelivered, queue: queue,
                                                  database: tx, logger: logger))
            }
        }
        switch outcome {
        case nil:
            return
        case .success:
            metrics.recordDuration(since: started)
            delivery.ack()
            metrics.acked.increment()
        case .failure(let error):
            metrics.retried.increment()
            logger.error("handler failed; the message goes back to its queue",
                         metadata: ["queue": .string(queue), "message_id": .string(delivery.properties.messageID ?? ""),
                                    "error": .string("\(error)")])
            try? await Task.sleep(for: .seconds(1))
            delivery.nack(requeue: true)
        }
    }

    /// Runs a handler in a span whose parent is the trace context the message carries.
    private func inSpan<T>(_ envelope: Envelope, queue: String, _ body: () async throws -> T) async throws -> T {
        try await withSpan(envelope.type, context: MessageTracing.context(for: envelope), ofKind: .consumer) { span in
            span.attributes["messaging.message.id"] = envelope.messageID
            span.attributes["messaging.destination.name"] = queue
            return try await body()
        }
    }

    private func acknowledge(_ delivery: AMQPDelivery, _ envelope: Envelope, _ metrics: MessageMetrics) async {
        delivery.ack()
        metrics.acked.increment()
        await hooks.afterAck?(envelope)
    }

    /// The inbox row, the handler, its outbox rows: one transaction. Nil when the message was
    /// handled before (the inbox already has it).
    private func handleInTransaction(_ envelope: Envelope, queue: String, handler: HandlerRegistry.Erased,
                                     logger: MessageLogger) async throws -> [OutboxRecord]? {
        try await withInbox(envelope, queue: queue) { tx in
            let context = HandlerContext(envelope: envelope, database: tx, logger: logger, schema: options.schema, queries: queries)
            try await handler(envelope, context)
            return try await context.commit()
        }
    }

    /// A request that changes something and answers: inbox, handler, outbox in one transaction,
    /// the reply sent after commit. The reply is kept with the inbox row, in the same transaction:
    /// a request delivered again (the worker died after its commit, before it answered, and its
    /// caller still waits) gets the first handling's answer, and has no second effect.
    private func respondInTransaction(_ envelope: Envelope, queue: String, responder: HandlerRegistry.ErasedResponder,
                                      logger: MessageLogger) async throws -> ([UInt8], [OutboxRecord]) {
        let inbox = "\(quoteIdentifier(options.schema)).inbox"
        let answered = try await withInbox(envelope, queue: queue) { tx in
            let context = HandlerContext(envelope: envelope, database: tx, logger: logger, schema: options.schema, queries: queries)
            let reply = try await responder(envelope, context)
            try context.write("UPDATE \(inbox) SET reply = $2 WHERE message_id = $1", [envelope.messageID, Data(reply)])
            return (reply, try await context.commit())
        }
        if let answered { return answered }
        let stored = try await database.query("SELECT reply FROM \(inbox) WHERE message_id = $1", [envelope.messageID])
        guard stored.count == 1, let reply = try stored[0].decode(Data?.self, 0) else {
            throw PermanentFailure("duplicate", "request \(envelope.messageID) was handled before; its answer went to the first delivery")
        }
        logger.info("request delivered again: answered with what its first handling answered")
        return (Array(reply), [])
    }

    /// Runs `body` in a transaction that records the message in the inbox; nil, with nothing
    /// done, when the inbox already has it. The inbox row goes in the round trip of the body's
    /// first statement (or of its COMMIT) rather than in one of its own: a message handled before
    /// fails there, on the inbox's key, and the transaction rolls back. So a redelivered message
    /// stops at its handler's first statement: what a handler does before that (decoding, asking a
    /// query) it may do again; what it must do once belongs after a statement.
    private func withInbox<T: Sendable>(_ envelope: Envelope, queue: String,
                                        _ body: (PostgresConnection) async throws -> T) async throws -> T? {
        let schema = quoteIdentifier(options.schema)
        do {
            return try await database.transaction { tx in
                let inbox = try tx.sendWithNext(PostgresStatement(
                    "INSERT INTO \(schema).inbox (message_id, type, queue) VALUES ($1, $2, $3)",
                    [envelope.messageID, envelope.type, queue]))
                do {
                    return try await body(tx)
                } catch {
                    if case .failure(let failure)? = inbox.result, failure.sqlState == "23505" { throw HandledBefore() }
                    throw error
                }
            }
        } catch is HandledBefore {
            return nil
        }
    }

    /// A handler failed: a permanent failure (or the last retry tier used up) dead-letters the
    /// message; anything else sends it to the next retry tier. Acked only once the copy is confirmed.
    private func fail(_ delivery: AMQPDelivery, envelope: Envelope, queue: String, failure: any Error,
                      publisher: AMQPChannel, logger: MessageLogger) async {
        let permanent = failure is PermanentFailure || failure is ValidationFailure
        let retriesAllowed = topology.queue(named: queue)?.retries ?? true
        if !permanent, retriesAllowed, let tier = topology.retryExchange(forAttempt: envelope.attempt) {
            var properties = delivery.properties
            var headers = properties.headers ?? [:]
            headers[Envelope.Header.attempt] = .int(Int64(envelope.attempt + 1))
            Self.recordOriginalAddress(of: delivery, in: &headers)
            properties.headers = headers
            properties.persistent = true
            do {
                try await publisher.publish(delivery.body, exchange: tier, routingKey: queue, properties: properties, mandatory: true)
                delivery.ack()
                metrics(queue: queue, type: envelope.type).retried.increment()
                logger.warning("handler failed; retrying through \(tier)", metadata: ["error": .string("\(failure)")])
            } catch {
                logger.error("could not send the message to retry tier \(tier); leaving it to the broker", metadata: ["error": .string("\(error)")])
                delivery.nack(requeue: true)
            }
            return
        }
        await deadLetter(delivery, queue: queue, type: envelope.type, failure: failure, publisher: publisher, logger: logger)
    }

    /// Publishes the message, untouched but for the error headers, to the dead-letter exchange,
    /// and acks it once the broker confirmed the copy.
    private func deadLetter(_ delivery: AMQPDelivery, queue: String, type: String, failure: any Error,
                            publisher: AMQPChannel, logger: MessageLogger? = nil) async {
        let logger = logger?.logger ?? self.logger
        let kind = (failure as? PermanentFailure)?.kind ?? (failure is ValidationFailure ? "validation" : "retries-exhausted")
        var properties = delivery.properties
        var headers = properties.headers ?? [:]
        headers[Envelope.Header.error] = .string(String("\(failure)".prefix(2000)))
        headers[Envelope.Header.errorType] = .string(kind)
        headers[Envelope.Header.failedQueue] = .string(queue)
        headers[Envelope.Header.failedAt] = .string(Date().formatted(Self.failedAtFormat))
        Self.recordOriginalAddress(of: delivery, in: &headers)
        properties.headers = headers
        properties.persistent = true
        do {
            try await publisher.publish(delivery.body, exchange: topology.deadLetterExchange, routingKey: queue,
                                        properties: properties, mandatory: true)
            delivery.ack()
            Counter(label: "shopfleet_messages_dead_lettered_total", dimensions: [("queue", queue), ("type", type), ("reason", kind)]).increment()
            logger.error("dead-lettered", metadata: ["error_type": .string(kind), "error": .string("\(failure)")])
        } catch {
            logger.error("could not dead-letter the message; leaving it to the broker", metadata: ["error": .string("\(error)")])
            delivery.nack(requeue: true)
        }
    }

    /// Milliseconds: two failures of one message within a second are told apart.
    static let failedAtFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The exchange and routing key the message was published with, unless an earlier failure
    /// recorded them (then the delivery came back from a retry tier, not from its publisher).
    static func recordOriginalAddress(of delivery: AMQPDelivery, in headers: inout AMQPTable) {
        guard headers[Envelope.Header.originalExchange] == nil else { return }
        headers[Envelope.Header.originalExchange] = .string(delivery.exchange)
        headers[Envelope.Header.originalRoutingKey] = .string(delivery.routingKey)
    }

    /// Runs a query's (or a request's) handler and replies to `reply_to`. A failure gets an error
    /// reply at once, so the caller need not wait for its deadline.
    private func answer(_ delivery: AMQPDelivery, envelope: Envelope, publisher: AMQPChannel, logger: MessageLogger,
                        _ produce: () async throws -> [UInt8]) async {
        guard let replyTo = envelope.replyTo else {
            logger.warning("query without reply_to; dropped")
            delivery.ack()
            return
        }
        var reply: [UInt8]
        var properties = AMQPProperties(contentType: "application/json", persistent: false,
                                        correlationID: envelope.correlationID ?? envelope.messageID,
                                        messageID: UUIDv7.generate(), type: envelope.type + ".reply")
        do {
            reply = try await produce()
        } catch {
            var fields = ["error": "\(error)"]
            if let failure = error as? PermanentFailure { fields["kind"] = failure.kind }
            if error is ValidationFailure { fields["kind"] = "validation" }
            reply = Array((try? MessageCodec.encode(fields)) ?? Data())
            properties.type = QueryClient.errorReplyType
            logger.warning("query failed", metadata: ["error": .string("\(error)")])
        }
        do {
            try await publisher.publish(reply, exchange: "", routingKey: replyTo, properties: properties)
        } catch {
            logger.warning("reply not delivered (the caller may have gone)", metadata: ["error": .string("\(error)")])
        }
        delivery.ack()
    }

    /// Errors that say the database cannot be reached, not that the message is bad.
    static func isInfrastructure(_ error: PostgresError) -> Bool {
        switch error.code {
        case .connectionFailed, .connectionLost, .poolTimeout, .closed: return true
        default:
            guard let state = error.sqlState else { return false }
            // 08: connection exception; 57P0x: server shutting down; 40001/40P01: serialization
            // failure and deadlock, which succeed when tried again.
            return state.hasPrefix("08") || state.hasPrefix("57P0") || state == "40001" || state == "40P01"
        }
    }
}

/// A message's logger, with its ids as metadata, built only when something is logged: most
/// messages log nothing, and six metadata entries per message are measurable.
struct MessageLogger: Sendable {
    let base: Logger
    let envelope: Envelope
    let queue: String

    var logger: Logger {
        var logger = base
        logger[metadataKey: "message_id"] = .string(envelope.messageID)
        logger[metadataKey: "type"] = .string(envelope.type)
        logger[metadataKey: "queue"] = .string(queue)
        logger[metadataKey: "attempt"] = .stringConvertible(envelope.attempt)
        if let saga = envelope.sagaID { logger[metadataKey: "saga_id"] = .string(saga) }
        if let trace = envelope.traceID { logger[metadataKey: "trace_id"] = .string(trace) }
        return logger
    }

    func info(_ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata? = nil) {
        if base.logLevel <= .info { logger.info(message(), metadata: metadata) }
    }

    func warning(_ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata? = nil) {
        if base.logLevel <= .warning { logger.warning(message(), metadata: metadata) }
    }

    func error(_ message: @autoclosure () -> Logger.Message, metadata: Logger.Metadata? = nil) {
        if base.logLevel <= .error { logger.error(message(), metadata: metadata) }
    }
}

/// Handlers in flight for one queue, across its consumers.
final class InFlightGauge: Sendable {
    private let count = Atomic<Int>(0)
    private let gauge: Gauge

    init(service: String, queue: String) {
        gauge = Gauge(label: "shopfleet_handlers_in_flight", dimensions: [("service", service), ("queue", queue)])
    }

    func begin(_ messages: Int = 1) { gauge.record(count.add(messages, ordering: .relaxed).newValue) }
    func end(_ messages: Int = 1) { gauge.record(count.subtract(messages, ordering: .relaxed).newValue) }
}

/// The inbox already had the message: its transaction rolled back, nothing done.
private struct HandledBefore: Error {}

/// What a consumer received and has not handled yet: filled by the task reading the consumer,
/// emptied a batch at a time.
final class DeliveryBuffer: Sendable {
    private struct State {
        var deliveries: [AMQPDelivery] = []
        var waiting: CheckedContinuation<Void, Never>?
        var ended = false
        var failure: (any Error)?

        /// The oldest `count` deliveries, or fewer, taken out.
        mutating func take(_ count: Int) -> [AMQPDelivery] {
            let taken = Array(deliveries.prefix(count))
            deliveries.removeFirst(taken.count)
            return taken
        }
    }
    private let state = Mutex(State())

    func put(_ delivery: AMQPDelivery) {
        let waiting = state.withLock { state in
            state.deliveries.append(delivery)
            defer { state.waiting = nil }
            return state.waiting
        }
        waiting?.resume()
    }

    /// The consumer ended (cancelled, or its channel failed with `failure`).
    func finish(_ failure: (any Error)?) {
        let waiting = state.withLock { state in
            state.ended = true
            state.failure = failure
            defer { state.waiting = nil }
            return state.waiting
        }
        waiting?.resume()
    }

    /// Up to `max` deliveries, oldest first, once there is at least one (and, with `wait`, after
    /// waiting that long for more); nil when the consumer ended and everything was taken.
    func take(max: Int, wait: Duration) async throws -> [AMQPDelivery]? {
        while true {
            let (batch, ended, failure) = state.withLock { state in (state.take(max), state.ended, state.failure) }
            if !batch.isEmpty {
                guard wait > .zero, batch.count < max, !ended else { return batch }
                try? await Task.sleep(for: wait)
                return batch + state.withLock { $0.take(max - batch.count) }
            }
            if ended {
                if let failure { throw failure }
                return nil
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if !state.deliveries.isEmpty || state.ended { return true }
                    state.waiting = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }
    }
}
