import Metrics
import Synchronization

/// The metric handles of one (queue, type), made once and reused: making a handle goes through
/// the metrics factory's registry (a lock and a lookup), which is too much to do per message.
struct MessageMetrics: Sendable {
    let consumed: Counter
    let acked: Counter
    let duplicate: Counter
    let retried: Counter
    let duration: Timer

    init(queue: String, type: String) {
        let dimensions = [("queue", queue), ("type", type)]
        consumed = Counter(label: "shopfleet_messages_consumed_total", dimensions: dimensions)
        acked = Counter(label: "shopfleet_messages_acked_total", dimensions: dimensions)
        duplicate = Counter(label: "shopfleet_messages_duplicate_total", dimensions: dimensions)
        retried = Counter(label: "shopfleet_messages_retried_total", dimensions: dimensions)
        duration = Timer(label: "shopfleet_handler_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
    }

    func recordDuration(since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        duration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}

/// Handles by (queue, type). Types come from messages, so the cache is bounded: past `limit`
/// entries, unknown types share one entry rather than growing the cache (and the metrics) without end.
final class MessageMetricsCache: Sendable {
    private let entries = Mutex<[String: MessageMetrics]>([:])
    private let limit = 512

    func callAsFunction(queue: String, type: String) -> MessageMetrics {
        let key = queue + "\u{0}" + type
        if let found = entries.withLock({ $0[key] }) { return found }
        let made = MessageMetrics(queue: queue, type: type)
        return entries.withLock { entries in
            if let found = entries[key] { return found }
            if entries.count >= limit {
                let overflow = queue + "\u{0}(other)"
                if let shared = entries[overflow] { return shared }
                let shared = MessageMetrics(queue: queue, type: "(other)")
                entries[overflow] = shared
                return shared
            }
            entries[key] = made
            return made
        }
    }
}
