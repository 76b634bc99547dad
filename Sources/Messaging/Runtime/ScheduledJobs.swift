public import Logging
public import PostgresClient
import FoundationEssentials

/// Work a worker does on a timer rather than on a message: firing due saga timeouts, releasing
/// expired reservations. Every replica runs it; a job takes its rows with
/// `FOR UPDATE SKIP LOCKED` so that replicas share the work instead of repeating it.
public struct ScheduledJob: Sendable {
    public var name: String
    public var every: Duration
    public var body: @Sendable (JobContext) async throws -> Void

    public init(_ name: String, every: Duration, _ body: @escaping @Sendable (JobContext) async throws -> Void) {
        self.name = name
        self.every = every
        self.body = body
    }
}

/// What a scheduled job gets: the pool, a logger, and transactions with an outbox.
public struct JobContext: Sendable {
    public let database: PostgresClient
    public let logger: Logger
    let job: String
    let service: String
    let schema: String
    let pipeline: OutboxPipeline
    let queries: QueryClients?

    /// Runs `body` in a transaction whose ``HandlerContext`` sends through the outbox, as a
    /// handler's does; what it sent is published after the commit. `sagaID` becomes the saga of
    /// everything sent.
    public func transaction<T: Sendable>(sagaID: String? = nil, _ body: @Sendable (HandlerContext) async throws -> T) async throws -> T {
        // A job has no message; its transaction gets an envelope of its own, so what it sends is
        // caused by "the job ran" and correlates to that run.
        let envelope = Envelope(type: "\(service).job.\(job)", sagaID: sagaID, traceparent: TraceParent.random().description, body: [])
        let messageLogger = MessageLogger(base: logger, envelope: envelope, queue: "(job \(job))")
        let (value, records) = try await database.transaction { tx in
            let context = HandlerContext(envelope: envelope, database: tx, logger: messageLogger, schema: schema, queries: queries)
            let value = try await body(context)
            return (value, try await context.commit())
        }
        if !records.isEmpty { await pipeline.submit(records) }
        return value
    }

    /// Runs one item of a pass (a saga's timeout, a reservation's expiry) in a transaction of its
    /// own, so that the item cannot stop the pass for the others: when it fails for a reason of
    /// its own (bad data, a bug) the failure is logged with `item`, `postpone` runs (outside the
    /// failed transaction, so the next passes do not trip over the item at once), and the result
    /// is nil. When the database cannot be reached the error is thrown: the pass stops and the
    /// next one tries again.
    public func isolated<T: Sendable>(_ item: String, sagaID: String? = nil,
                                      postpone: (@Sendable (PostgresClient) async throws -> Void)? = nil,
                                      _ body: @Sendable (HandlerContext) async throws -> T) async throws -> T? {
        do {
            return try await transaction(sagaID: sagaID, body)
        } catch let error as PostgresError where Worker.isInfrastructure(error) {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            logger.error("\(job): \(item) failed; the others go on, it is tried again later",
                         metadata: ["item": .string(item), "error": .string("\(error)")])
            do {
                try await postpone?(database)
            } catch {
                logger.warning("\(job): could not postpone \(item)", metadata: ["error": .string("\(error)")])
            }
            return nil
        }
    }
}
