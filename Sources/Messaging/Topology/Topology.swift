import FoundationEssentials

/// The fleet's messaging, in SNS/SQS terms, as authored in `topology/shopfleet.yaml`.
///
/// - A **topic** is a topic exchange (one per domain, `<domain>.events`).
/// - A **queue** is a durable quorum queue with one consumer group (competing consumers); a
///   `transient` one (read-only queries) is a classic queue whose messages stay in memory.
/// - A **subscription** binds a queue to a topic with routing-key filters (`orders.#`), as an SNS
///   filter policy would.
/// - **Redrive**: every queue has a delivery limit and dead-letters into the one dead-letter
///   exchange, as an SQS redrive policy with maxReceiveCount does.
/// - **Retry tiers** are delay queues: a message waits out the tier's TTL there, then is
///   dead-lettered back to the queue it failed on, through the retry-return exchange.
///
/// ``render()`` turns it into RabbitMQ's `definitions.json`.
public struct Topology: Sendable, Equatable {
    public struct Queue: Sendable, Equatable {
        public var name: String
        /// Deliveries before the broker dead-letters a message (a worker that keeps dying on it).
        public var deliveryLimit: Int
        /// Whether the retry tiers route back to this queue.
        public var retries: Bool
        public var subscriptions: [Subscription]
        /// A queue for questions that live no longer than their caller's deadline (read-only
        /// queries over request/reply): a classic queue whose messages are not written to disk and
        /// expire after ``Topology/transientTTLMilliseconds``, without dead-lettering or retries.
        public var transient: Bool = false
    }

    /// How long a message may wait in a transient queue: longer than any query deadline.
    public static let transientTTLMilliseconds = 60_000

    public struct Subscription: Sendable, Equatable {
        public var topic: String
        /// Routing-key patterns (`*` one word, `#` any number).
        public var filter: [String]
    }

    public struct RetryTier: Sendable, Equatable {
        /// As written (`5s`); names the tier's exchange and queue.
        public var label: String
        public var delayMilliseconds: Int
        public var queue: String
    }

    public var vhost: String
    public var deadLetterExchange: String
    public var deadLetterQueue: String
    /// Deliveries of one dead letter before the broker gives up on storing it: a letter the store
    /// refuses every time moves on to ``unstoredQueue`` instead of going round forever.
    public var deadLetterDeliveryLimit: Int = 10
    /// Where letters the store could not take wait for an operator (an exchange and a queue of
    /// this name; nothing consumes it).
    public var unstoredQueue: String = "shopfleet.dead-letters.unstored"
    public var retryExchangePrefix: String
    public var retryReturnExchange: String
    public var retryTiers: [RetryTier]
    public var topics: [String]
    public var queues: [Queue]
    /// The topics the edge follows with exclusive queues of its own (`edge.follows`).
    public var edgeFollows: [String] = []

    public func queue(named name: String) -> Queue? { queues.first { $0.name == name } }

    /// The queues the topology makes besides the authored ones: the dead-letter queue and the retry tiers' delay queues.
    public var internalQueues: [String] { [deadLetterQueue, unstoredQueue] + retryTiers.map(\.queue) }

    /// Whether the topology declares this queue, authored or internal.
    public func declares(queue name: String) -> Bool { queue(named: name) != nil || internalQueues.contains(name) }

    /// The exchange a message goes to for its `attempt`-th retry (1-based), or nil after the last tier.
    public func retryExchange(forAttempt attempt: Int) -> String? {
        attempt >= 1 && attempt <= retryTiers.count ? retryTiers[attempt - 1].queue : nil
    }
}

/// A topology file that cannot be used, with what is wrong and where.
public struct TopologyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Reading the authored file

extension Topology {
    /// The authored YAML, field by field; see `topology/shopfleet.yaml` for a commented example.
    struct File: Decodable {
        struct DeadLetters: Decodable {
            var exchange: String
            var queue: String
            var delivery_limit: Int?
            var unstored: String?
        }
        struct Retry: Decodable {
            var exchange_prefix: String
            var return_exchange: String
            var tiers: [String]
        }
        struct Defaults: Decodable {
            var delivery_limit: Int?
        }
        struct Subscription: Decodable {
            var topic: String
            var filter: [String]?
        }
        struct Queue: Decodable {
            var name: String
            var delivery_limit: Int?
            var retries: Bool?
            var subscriptions: [Subscription]?
            var transient: Bool?
        }
        var vhost: String?
        var dead_letters: DeadLetters
        var retry: Retry
        var defaults: Defaults?
        struct Edge: Decodable {
            var follows: [String]?
        }
        var topics: [String]?
        var queues: [Queue]
        var edge: Edge?
    }

    /// Parses and validates the authored YAML. Errors name the file and what is wrong.
    public init(yaml: String, source: String = "topology") throws {
        let file: File
        do {
            let tree = try YAMLSubset.parse(yaml)
            file = try JSONDecoder().decode(File.self, from: JSONEncoder().encode(tree))
        } catch let error as YAMLSubset.Failure {
            throw TopologyError("\(source): \(error)")
        } catch let error as DecodingError {
            throw TopologyError("\(source): \(error.summary)")
        } catch {
            throw TopologyError("\(source): not valid YAML: \(error)")
        }
        let defaultLimit = file.defaults?.delivery_limit ?? 5
        var tiers: [RetryTier] = []
        for label in file.retry.tiers {
            guard let ms = Self.milliseconds(label) else {
                throw TopologyError("\(source): retry tier '\(label)' is not a duration such as 500ms, 5s, 2m or 1h")
            }
            if let last = tiers.last, ms <= last.delayMilliseconds {
                throw TopologyError("\(source): retry tiers must grow: '\(label)' is not longer than '\(last.label)'")
            }
            tiers.append(RetryTier(label: label, delayMilliseconds: ms, queue: "\(file.retry.exchange_prefix).\(label)"))
        }
        self.init(
            vhost: file.vhost ?? "/",
            deadLetterExchange: file.dead_letters.exchange,
            deadLetterQueue: file.dead_letters.queue,
            deadLetterDeliveryLimit: file.dead_letters.delivery_limit ?? 10,
            unstoredQueue: file.dead_letters.unstored ?? "\(file.dead_letters.queue).unstored",
            retryExchangePrefix: file.retry.exchange_prefix,
            retryReturnExchange: file.retry.return_exchange,
            retryTiers: tiers,
            topics: file.topics ?? [],
            queues: file.queues.map { q in
                Queue(name: q.name, deliveryLimit: q.delivery_limit ?? defaultLimit, retries: q.transient == true ? false : q.retries ?? true,
                      subscriptions: (q.subscriptions ?? []).map { Subscription(topic: $0.topic, filter: $0.filter ?? ["#"]) },
                      transient: q.transient ?? false)
            })
        edgeFollows = file.edge?.follows ?? []
        try validate(source: source)
    }

    public init(contentsOfFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TopologyError("\(path): cannot be read")
        }
        try self.init(yaml: String(decoding: data, as: UTF8.self), source: path)
    }

    func validate(source: String) throws {
        var names = Set<String>()
        for name in queues.map(\.name) + internalQueues {
            guard !name.isEmpty, !name.hasPrefix("amq.") else {
                throw TopologyError("\(source): '\(name)' is not a usable queue name")
            }
            guard names.insert(name).inserted else {
                throw TopologyError("\(source): queue '\(name)' is declared twice (or clashes with a dead-letter or retry queue)")
            }
        }
        guard deadLetterDeliveryLimit >= 1 else {
            throw TopologyError("\(source): dead_letters.delivery_limit must be at least 1")
        }
        let exchanges = topics + [deadLetterExchange, unstoredQueue, retryReturnExchange] + retryTiers.map(\.queue)
        guard Set(exchanges).count == exchanges.count else {
            throw TopologyError("\(source): an exchange name is used twice among topics, dead letters and retry tiers")
        }
        for topic in edgeFollows where !topics.contains(topic) {
            throw TopologyError("\(source): edge.follows names '\(topic)', which is not a topic")
        }
        for queue in queues {
            guard queue.deliveryLimit >= 1 else {
                throw TopologyError("\(source): queue '\(queue.name)': delivery_limit must be at least 1")
            }
            for subscription in queue.subscriptions {
                guard topics.contains(subscription.topic) else {
                    throw TopologyError("\(source): queue '\(queue.name)' subscribes to '\(subscription.topic)', which is not a topic")
                }
                guard !subscription.filter.isEmpty, subscription.filter.allSatisfy({ !$0.isEmpty }) else {
                    throw TopologyError("\(source): queue '\(queue.name)': a subscription filter must not be empty")
                }
            }
        }
    }

    /// `duration` as ``milliseconds(_:)`` reads it back: whole seconds as `5s`, anything else in
    /// milliseconds (`100ms`, rounded up).
    public static func durationText(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 { return "\(seconds)s" }
        return "\(seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)ms"
    }

    /// `500ms`, `5s`, `2m`, `1h`: the durations of the topology file and of configuration.
    public static func milliseconds(_ text: String) -> Int? {
        let units: [(String, Int)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            // Too large to count in milliseconds is not a duration (an overflow would trap).
            if let n = Int(text.dropLast(suffix.count)), n > 0 {
                let (product, overflow) = n.multipliedReportingOverflow(by: factor)
                return overflow ? nil : product
            }
        }
        return nil
    }
}
