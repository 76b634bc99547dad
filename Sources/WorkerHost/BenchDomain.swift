public import Messaging
public import PostgresClient

/// The handlers `shopfleet bench worker` measures, as a domain of their own (`bench`, not listed):
/// its memory figures come from `shopfleet worker bench`, the very path a deployed worker takes.
public enum BenchDomain {
    public static let name = "bench"
    public static let schema = "bench_worker"
    public static let migrations = [
        Migration(version: 100, name: "records", sql: "CREATE TABLE records (n bigint NOT NULL, message_id text NOT NULL)"),
    ]

    /// A no-op handler (no transaction) and one doing the inbox + outbox transaction with one row and one event.
    public static func definition(schema: String = schema) -> WorkerDefinition {
        var handlers = HandlerRegistry()
        let table = "\(quoteIdentifier(schema)).records"
        handlers.onWithoutTransaction(BenchNoop.self) { _, _ in }
        handlers.on(BenchRecord.self) { record, context in
            // Nothing here needs the INSERT's result, so it goes with the COMMIT: the whole
            // transaction (BEGIN, inbox row, this row, outbox row, COMMIT) is one round trip.
            try context.write("INSERT INTO \(table) (n, message_id) VALUES ($1, $2)", [record.n, context.envelope.messageID])
            try await context.publish(BenchRecorded(n: record.n))
        }
        return WorkerDefinition(service: name, schema: schema, queues: [BenchNoop.queue, BenchRecord.queue],
                                migrations: migrations, handlers: handlers)
    }
}

public struct BenchNoop: Command {
    public static let type = "bench.Noop.v1"
    public static let queue = "bench.noop"
    public var n: Int
    public var padding: String

    public init(n: Int, padding: String) {
        self.n = n
        self.padding = padding
    }
}

public struct BenchRecord: Command {
    public static let type = "bench.Record.v1"
    public static let queue = "bench.tx"
    public var n: Int
    public var padding: String

    public init(n: Int, padding: String) {
        self.n = n
        self.padding = padding
    }
}

public struct BenchRecorded: Event {
    public static let type = "bench.Recorded.v1"
    public var n: Int

    public init(n: Int) {
        self.n = n
    }
}
