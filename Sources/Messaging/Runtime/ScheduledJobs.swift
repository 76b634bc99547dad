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
}
