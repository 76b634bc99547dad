import AMQPClient
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

    public static func definition(topology: Topology) -> WorkerDefinition {
        var handlers = HandlerRegistry()
        handlers.onEveryDelivery { delivery in
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
        let gauges = WaitingGauges()
        let measure = ScheduledJob("dead-letter-gauges", every: .seconds(10)) { context in
            let (perQueue, oldest) = try await DeadLetterReader(database: context.database).waiting()
            gauges.record(perQueue: perQueue, oldestAge: oldest)
        }
        return WorkerDefinition(service: "deadletters", schema: schema, queues: [topology.deadLetterQueue],
                                migrations: migrations, handlers: handlers, jobs: [measure])
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
