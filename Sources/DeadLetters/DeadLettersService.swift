import AMQPClient
import Contracts
import FoundationEssentials
public import Messaging
import Logging
import Metrics
public import PostgresClient
import Synchronization

/// `shopfleet worker deadletters`: consumes the one dead-letter queue and keeps every letter in
/// the store, once.
public enum DeadLettersService {
    public static let schema = DeadLetterStore.schema
    public static let migrations = DeadLetterStore.migrations

    /// The worker: stores what arrives on the dead-letter queue; answers operators' queries and
    /// runs their replays and discards (`deadletters.queries`, `deadletters.commands`), the
    /// replays published over a connection of its own to `amqpURL`.
    public static func definition(topology: Topology, amqpURL: String? = nil) -> WorkerDefinition {
        var handlers = HandlerRegistry()
        handlers.onEveryDelivery(queue: topology.deadLetterQueue) { delivery in
            let receipt = DeadLetterReceipt(delivery.message, deliveryLimit: { topology.queue(named: $0)?.deliveryLimit })
            let outcome = try await DeadLetterStore.store(receipt, on: delivery.database)
            var metadata: Logger.Metadata = [
                "failed_queue": .string(receipt.failedQueue), "type": .string(receipt.type),
                "error_type": .string(receipt.errorType), "message_id": .string(receipt.messageID ?? "(none)"),
            ]
            if let saga = receipt.sagaID { metadata["saga_id"] = .string(saga) }
            switch outcome {
            case .stored(let id), .failedAgain(let id):
                metadata["letter_id"] = .string(id)
                Counter(label: "shopfleet_dead_letters_stored_total",
                        dimensions: [("queue", receipt.failedQueue), ("type", receipt.type)]).increment()
                delivery.logger.warning(outcome == .stored(id: id) ? "dead letter stored" : "a stored dead letter failed again",
                                        metadata: metadata)
            case .duplicate(let id):
                metadata["letter_id"] = .string(id)
                delivery.logger.info("dead letter delivered again; already stored", metadata: metadata)
            }
        }
        operations(&handlers)
        let gauges = WaitingGauges()
        let measure = ScheduledJob("dead-letter-gauges", every: .seconds(10)) { context in
            let (perQueue, oldest) = try await DeadLetterReader(database: context.database).waiting()
            gauges.record(perQueue: perQueue, oldestAge: oldest)
        }
        var jobs = [measure]
        if let amqpURL {
            let replayer = Replayer(url: amqpURL)
            jobs.append(ScheduledJob("dead-letter-replays", every: .milliseconds(100)) { context in
                let sent = try await replayer.replayDue(DeadLetterOperator(database: context.database))
                if sent > 0 { context.logger.info("replayed dead letters", metadata: ["count": .stringConvertible(sent)]) }
            })
        }
        return WorkerDefinition(service: "deadletters", schema: schema, queues: topology.queues(of: Topology.deadLetterService),
                                migrations: migrations, handlers: handlers, jobs: jobs)
    }

    /// What the console asks (through the edge, which never opens a database).
    static func operations(_ handlers: inout HandlerRegistry) {
        handlers.answer(ListDeadLetters.self) { query, context in
            var filter = DeadLetterFilter()
            filter.ids = query.ids
            filter.fingerprint = query.fingerprint
            filter.sagaID = query.sagaID
            filter.queue = query.queue
            filter.type = query.messageType
            filter.statuses = query.statuses
            filter.limit = query.limit
            return try await DeadLetterReader(database: context.database).letters(filter)
        }
        handlers.answer(ListDeadLetterGroups.self) { query, context in
            try await DeadLetterReader(database: context.database).groups(statuses: query.statuses)
        }
        handlers.answer(GetDeadLetter.self) { query, context in
            try await DeadLetterReader(database: context.database).letter(query.letterID).map { detail in
                DeadLetterDocument(letter: detail.letter, properties: detail.properties, headers: detail.headers, body: detail.bodyText,
                                   history: detail.history)
            }
        }
        handlers.answer(CountWaitingDeadLetters.self) { query, context in
            try await DeadLetterReader(database: context.database).newestWaiting(sagas: query.sagaIDs)
        }
        handlers.on(ReplayDeadLetters.self) { command, context in
            let scheduled = try await DeadLetterOperator.requestReplay(command.letterIDs, rate: command.ratePerSecond, again: command.again,
                                                                     requestedBy: command.requestedBy, request: context.envelope.messageID,
                                                                     on: context.database)
            context.logger.notice("replay requested", metadata: [
                "requested_by": .string(command.requestedBy), "letters": .stringConvertible(command.letterIDs.count),
                "scheduled": .stringConvertible(scheduled.count), "rate": .stringConvertible(command.ratePerSecond),
            ])
        }
        handlers.respond(DiscardDeadLetters.self) { command, context in
            let discarded = try await DeadLetterOperator.discard(command.letterIDs, reason: "\(command.reason) (discarded by \(command.requestedBy))",
                                                                 statuses: command.statuses, on: context.database)
            context.logger.notice("dead letters discarded", metadata: [
                "requested_by": .string(command.requestedBy), "discarded": .stringConvertible(discarded.count),
            ])
            return discarded
        }
    }
}

/// The connection replays are published on: opened when the first replay is due, opened again
/// after it broke.
actor Replayer {
    let url: String
    private var connection: AMQPConnection?
    private var channel: AMQPChannel?
    /// After a failed connect, not before this: the job runs ten times a second, the broker may be away.
    private var connectAgainAt: ContinuousClock.Instant?

    init(url: String) { self.url = url }

    func replayDue(_ replays: DeadLetterOperator) async throws -> Int {
        guard try await replays.anyDue() else { return 0 }
        if let connectAgainAt, ContinuousClock.now < connectAgainAt { return 0 }
        let channel: AMQPChannel
        do {
            channel = try await openChannel()
            connectAgainAt = nil
        } catch {
            connectAgainAt = .now + .seconds(5)
            throw error
        }
        do {
            return try await replays.replayDue(on: channel)
        } catch let error as AMQPError {
            // The channel (or the connection) is gone with the error: the next pass opens another.
            self.channel = nil
            if connection?.isConnected != true { connection = nil }
            throw error
        }
    }

    private func openChannel() async throws -> AMQPChannel {
        if let channel { return channel }
        if connection?.isConnected != true {
            await connection?.close()
            connection = try await AMQPConnection.connect(try AMQPConfiguration(url: url, connectionName: "shopfleet-deadletters replays"))
        }
        let opened = try await connection!.openChannel()
        try await opened.enableConfirms()
        channel = opened
        return opened
    }
}

/// `shopfleet_dead_letters_waiting{queue}` and `shopfleet_dead_letters_oldest_waiting_seconds`,
/// from the store (a replay or discard by `shopfleet dlq` changes them too).
final class WaitingGauges: Sendable {
    private let known = Mutex<Set<String>>([])

    func record(perQueue: [String: Int], oldestAge: Double) {
        let queues = known.withLock { known in
            known.formUnion(perQueue.keys)
            return known
        }
        for queue in queues {
            Gauge(label: "shopfleet_dead_letters_waiting", dimensions: [("queue", queue)]).record(perQueue[queue] ?? 0)
        }
        // Made here, not in init: the definition is built before the process sets up its metrics.
        Gauge(label: "shopfleet_dead_letters_oldest_waiting_seconds").record(oldestAge)
    }
}
