import FoundationEssentials
public import Messaging
public import PostgresClient
#if canImport(Glibc)
import Glibc
#endif

// A worker for the runtime's tests: handlers that record their effects, send downstream, fail,
// take their time or reject their input, run as a process of its own so tests can kill it.

public struct Work: Command {
    public static let type = "fixture.Work.v1"
    public var key: String
    public var downstream: Bool = false
    public var event: Bool = false
    public init(key: String, downstream: Bool = false, event: Bool = false) {
        self.key = key
        self.downstream = downstream
        self.event = event
    }
}

public struct Downstream: Command {
    public static let type = "fixture.Downstream.v1"
    public static let queue = "fixture.downstream"
    public var key: String
}

/// Sends `Downstream` and writes nothing itself: its inbox row goes in the COMMIT's round trip.
public struct Forward: Command {
    public static let type = "fixture.Forward.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

public struct WorkDone: Event {
    public static let type = "fixture.WorkDone.v1"
    public var key: String
}

public struct Fail: Command {
    public static let type = "fixture.Fail.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

public struct Slow: Command {
    public static let type = "fixture.Slow.v1"
    public var key: String
    public var milliseconds: Int
    /// When set, the handler waits for this PostgreSQL advisory lock (shared) instead of
    /// sleeping: a test holding it exclusively keeps the handler in flight until it lets go.
    public var gate: Int?
    /// Sends a `Downstream` when done (a row in the outbox).
    public var downstream: Bool?
    public init(key: String, milliseconds: Int, gate: Int? = nil, downstream: Bool? = nil) {
        self.key = key
        self.milliseconds = milliseconds
        self.gate = gate
        self.downstream = downstream
    }
}

public struct Strict: Command, Validatable {
    public static let type = "fixture.Strict.v1"
    public var key: String
    public var quantity: Int
    public init(key: String, quantity: Int) {
        self.key = key
        self.quantity = quantity
    }
    public func validate() throws(ValidationFailure) {
        guard (1...100).contains(quantity) else { throw ValidationFailure("quantity must be 1 to 100, not \(quantity)") }
    }
}

/// Fails while its key is in the `broken` table: a fault someone can fix, for replays.
public struct Flaky: Command {
    public static let type = "fixture.Flaky.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

/// Writes its effect with `context.write` (sent with the COMMIT); `failing` adds a second write
/// that the server refuses (a NULL in a NOT NULL column), also sent with the COMMIT.
public struct Deferred: Command {
    public static let type = "fixture.Deferred.v1"
    public var key: String
    public var failing: Bool
    public init(key: String, failing: Bool) {
        self.key = key
        self.failing = failing
    }
}

/// Kills the worker that handles it, every time: a poison message for the delivery limit.
public struct Crash: Command {
    public static let type = "fixture.Crash.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

public struct CountEffects: Query {
    public struct Reply: Codable, Sendable, Equatable {
        public var count: Int
        public init(count: Int) { self.count = count }
    }
    public static let type = "fixture.CountEffects.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

/// A request that changes something and answers: records an effect, answers how many there are.
public struct Stamp: Query {
    public struct Reply: Codable, Sendable, Equatable {
        public var count: Int
        public init(count: Int) { self.count = count }
    }
    public static let type = "fixture.Stamp.v1"
    public var key: String
    public init(key: String) { self.key = key }
}

public enum Fixture {
    public static let migrations = [
        Migration(version: 100, name: "effects", sql: """
            CREATE TABLE effects (key text NOT NULL, message_id text NOT NULL, at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE downstream_effects (key text NOT NULL, message_id text NOT NULL, type text, traceparent text, saga_id text,
                                             correlation_id text, causation_id text);
            CREATE TABLE audit (key text NOT NULL, message_id text NOT NULL);
            """),
        Migration(version: 101, name: "broken", sql: "CREATE TABLE broken (key text PRIMARY KEY);"),
    ]

    public static func definition(schema: String) -> WorkerDefinition {
        var handlers = HandlerRegistry()
        let table: @Sendable (String) -> String = { name in "\(quoteIdentifier(schema)).\(name)" }
        handlers.on(Work.self) { work, context in
            try await context.database.query("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                                             [work.key, context.envelope.messageID])
            if work.downstream { try await context.send(Downstream(key: work.key)) }
            if work.event { try await context.publish(WorkDone(key: work.key)) }
        }
        handlers.on(Forward.self) { message, context in
            try await context.send(Downstream(key: message.key))
        }
        handlers.on(Downstream.self) { message, context in
            let envelope = context.envelope
            try await context.database.query("""
                INSERT INTO \(table("downstream_effects")) (key, message_id, type, traceparent, saga_id, correlation_id, causation_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """, [message.key, envelope.messageID, envelope.type, envelope.traceparent, envelope.sagaID, envelope.correlationID,
                      envelope.causationID])
        }
        handlers.on(WorkDone.self) { message, context in
            try await context.database.query("INSERT INTO \(table("audit")) (key, message_id) VALUES ($1, $2)",
                                             [message.key, context.envelope.messageID])
        }
        handlers.on(Deferred.self) { message, context in
            try context.write("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                              [message.key, context.envelope.messageID])
            if message.failing {
                try context.write("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, NULL)", [message.key])
            }
        }
        handlers.on(Fail.self) { message, _ in
            struct Boom: Error, CustomStringConvertible { var key: String; var description: String { "boom for \(key)" } }
            throw Boom(key: message.key)
        }
        handlers.on(Flaky.self) { message, context in
            let broken = try await context.database.query("SELECT 1 FROM \(table("broken")) WHERE key = $1", [message.key])
            struct Broken: Error, CustomStringConvertible { var key: String; var description: String { "\(key) is broken" } }
            if broken.count > 0 { throw Broken(key: message.key) }
            try await context.database.query("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                                             [message.key, context.envelope.messageID])
        }
        handlers.on(Slow.self) { message, context in
            if let gate = message.gate {
                try await context.database.query("SELECT pg_advisory_xact_lock_shared($1::bigint)", [gate])
            } else {
                try await Task.sleep(for: .milliseconds(message.milliseconds))
            }
            try await context.database.query("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                                             [message.key, context.envelope.messageID])
            if message.downstream == true { try await context.send(Downstream(key: message.key)) }
        }
        handlers.on(Strict.self) { message, context in
            try await context.database.query("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                                             [message.key, context.envelope.messageID])
        }
        handlers.on(Crash.self) { _, _ in
            kill(getpid(), SIGKILL)
        }
        handlers.respond(Stamp.self) { request, context in
            try await context.database.query("INSERT INTO \(table("effects")) (key, message_id) VALUES ($1, $2)",
                                             [request.key, context.envelope.messageID])
            let rows = try await context.database.query("SELECT count(*) FROM \(table("effects")) WHERE key = $1", [request.key])
            return Stamp.Reply(count: try rows[0].decode(Int.self, 0))
        }
        handlers.answer(CountEffects.self) { query, context in
            let rows = try await context.database.query("SELECT count(*) FROM \(table("effects")) WHERE key = $1", [query.key])
            return CountEffects.Reply(count: try rows[0].decode(Int.self, 0))
        }
        return WorkerDefinition(service: "fixture", schema: schema,
                                queues: ["fixture.commands", "fixture.downstream", "fixture.queries", "fixture.audit"],
                                migrations: migrations, handlers: handlers)
    }
}

@main
struct FixtureWorkerMain {
    static func main() async throws {
        func env(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
        guard let amqp = env("SHOPFLEET_AMQP_URL"), let database = env("SHOPFLEET_DATABASE_URL"),
              let schema = env("FIXTURE_SCHEMA"), let topology = env("SHOPFLEET_TOPOLOGY_FILE") else {
            print("FixtureWorker needs SHOPFLEET_AMQP_URL, SHOPFLEET_DATABASE_URL, SHOPFLEET_TOPOLOGY_FILE and FIXTURE_SCHEMA")
            exit(2)
        }
        var settings = WorkerSettings(amqpURL: amqp, databaseURL: database, topologyFile: topology,
                                      httpPort: Int(env("SHOPFLEET_HTTP_PORT") ?? "") ?? 0)
        settings.concurrency = Int(env("SHOPFLEET_WORKER_CONCURRENCY") ?? "") ?? 4
        settings.batchSize = Int(env("SHOPFLEET_WORKER_BATCH") ?? "") ?? 1
        var hooks = WorkerHooks()
        // Die the hard way at the named point, on the first Work message: what a crash or an OOM
        // kill would do.
        switch env("FIXTURE_CRASH") {
        case "after-commit":
            hooks.afterCommit = { envelope in if envelope.type == Work.type { kill(getpid(), SIGKILL) } }
        case "request-after-commit":
            hooks.afterCommit = { envelope in if envelope.type == Stamp.type { kill(getpid(), SIGKILL) } }
        case "after-ack":
            hooks.afterAck = { envelope in if envelope.type == Work.type { kill(getpid(), SIGKILL) } }
        default:
            break
        }
        do {
            try await WorkerProcess.run(Fixture.definition(schema: schema), settings: settings, hooks: hooks)
        } catch {
            print("FixtureWorker: \(error)")
            exit(1)
        }
    }
}
