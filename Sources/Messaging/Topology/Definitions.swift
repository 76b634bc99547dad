public import FoundationEssentials

/// A JSON value, for the open-ended parts of RabbitMQ's definitions (arguments, policy definitions).
public enum JSONValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }

    public var description: String {
        switch self {
        case .string(let s): return "\"\(s)\""
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .bool(let b): return String(b)
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .null: return "null"
        }
    }
}

/// RabbitMQ's definitions document, the parts Shopfleet writes: exchanges, queues, bindings and
/// policies. No users, permissions or passwords: those belong to whoever runs the broker.
public struct BrokerDefinitions: Codable, Sendable, Equatable {
    public struct Exchange: Codable, Sendable, Equatable {
        public var name: String
        /// Absent in a per-vhost export.
        public var vhost: String?
        public var type: String
        public var durable: Bool
        public var auto_delete: Bool
        public var `internal`: Bool
        public var arguments: [String: JSONValue]
    }

    public struct Queue: Codable, Sendable, Equatable {
        public var name: String
        /// Absent in a per-vhost export.
        public var vhost: String?
        public var durable: Bool
        public var auto_delete: Bool
        public var arguments: [String: JSONValue]
    }

    public struct Binding: Codable, Sendable, Equatable, Hashable {
        public var source: String
        /// Absent in a per-vhost export.
        public var vhost: String?
        public var destination: String
        public var destination_type: String
        public var routing_key: String
        public var arguments: [String: JSONValue]

        public static func == (a: Binding, b: Binding) -> Bool {
            a.source == b.source && a.destination == b.destination && a.destination_type == b.destination_type
                && a.routing_key == b.routing_key && a.arguments == b.arguments
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(source)
            hasher.combine(destination)
            hasher.combine(destination_type)
            hasher.combine(routing_key)
        }

        public var summary: String { "\(source) → \(destination_type) \(destination) (routing key '\(routing_key)')" }
    }

    public struct Policy: Codable, Sendable, Equatable {
        /// Absent in a per-vhost export.
        public var vhost: String?
        public var name: String
        public var pattern: String
        public var applyTo: String
        public var priority: Int
        public var definition: [String: JSONValue]

        enum CodingKeys: String, CodingKey {
            case vhost, name, pattern, priority, definition
            case applyTo = "apply-to"
        }
    }

    public var exchanges: [Exchange]
    public var queues: [Queue]
    public var bindings: [Binding]
    public var policies: [Policy]

    /// Pretty, key-sorted JSON with a trailing newline: the same topology always gives the same bytes.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    /// Reads a definitions document; fields RabbitMQ adds on export (users, vhosts, …) are ignored.
    public static func decode(_ data: Data) throws -> BrokerDefinitions {
        struct Loose: Decodable {
            var exchanges: [Exchange]?
            var queues: [Queue]?
            var bindings: [Binding]?
            var policies: [Policy]?
        }
        let loose = try JSONDecoder().decode(Loose.self, from: data)
        return BrokerDefinitions(exchanges: loose.exchanges ?? [], queues: loose.queues ?? [],
                                 bindings: loose.bindings ?? [], policies: loose.policies ?? [])
    }

    /// The same definitions for another virtual host.
    public func inVirtualHost(_ vhost: String) -> BrokerDefinitions {
        var copy = self
        for i in copy.exchanges.indices { copy.exchanges[i].vhost = vhost }
        for i in copy.queues.indices { copy.queues[i].vhost = vhost }
        for i in copy.bindings.indices { copy.bindings[i].vhost = vhost }
        for i in copy.policies.indices { copy.policies[i].vhost = vhost }
        return copy
    }
}

extension Topology {
    /// RabbitMQ definitions for this topology. Queue arguments carry only `x-queue-type: quorum`;
    /// everything that may change later (delivery limit, dead lettering, overflow, TTL) is a policy,
    /// so it can change on a live queue. Every list is sorted: rendering is deterministic.
    public func render() -> BrokerDefinitions {
        let v = vhost
        func exchange(_ name: String, _ type: String) -> BrokerDefinitions.Exchange {
            .init(name: name, vhost: v, type: type, durable: true, auto_delete: false, internal: false, arguments: [:])
        }
        func queue(_ name: String, transient: Bool = false) -> BrokerDefinitions.Queue {
            .init(name: name, vhost: v, durable: true, auto_delete: false, arguments: ["x-queue-type": .string(transient ? "classic" : "quorum")])
        }
        func binding(_ source: String, _ destination: String, _ key: String) -> BrokerDefinitions.Binding {
            .init(source: source, vhost: v, destination: destination, destination_type: "queue", routing_key: key, arguments: [:])
        }
        func policy(for queueName: String, _ definition: [String: JSONValue]) -> BrokerDefinitions.Policy {
            .init(vhost: v, name: "shopfleet:\(queueName)", pattern: "^\(Self.regexEscaped(queueName))$",
                  applyTo: "queues", priority: 10, definition: definition)
        }

        var exchanges = topics.map { exchange($0, "topic") }
        exchanges.append(exchange(deadLetterExchange, "fanout"))
        exchanges.append(exchange(unstoredQueue, "fanout"))
        exchanges.append(exchange(retryReturnExchange, "direct"))
        exchanges += retryTiers.map { exchange($0.queue, "fanout") }

        var queues = self.queues.map { queue($0.name, transient: $0.transient) }
        queues.append(queue(deadLetterQueue))
        queues.append(queue(unstoredQueue))
        queues += retryTiers.map { queue($0.queue) }

        var bindings: [BrokerDefinitions.Binding] = []
        for q in self.queues {
            for subscription in q.subscriptions {
                for pattern in subscription.filter { bindings.append(binding(subscription.topic, q.name, pattern)) }
            }
            if q.retries && !retryTiers.isEmpty { bindings.append(binding(retryReturnExchange, q.name, q.name)) }
        }
        bindings.append(binding(deadLetterExchange, deadLetterQueue, ""))
        bindings.append(binding(unstoredQueue, unstoredQueue, ""))
        bindings += retryTiers.map { binding($0.queue, $0.queue, "") }

        var policies = self.queues.map { q in
            // A question nobody is waiting for any more is dropped, not dead-lettered.
            q.transient ? policy(for: q.name, [
                "message-ttl": .int(Self.transientTTLMilliseconds),
                "overflow": .string("reject-publish"),
                "max-length": .int(100_000),
            ]) : policy(for: q.name, [
                "delivery-limit": .int(q.deliveryLimit),
                "dead-letter-exchange": .string(deadLetterExchange),
                "dead-letter-strategy": .string("at-least-once"),
                "overflow": .string("reject-publish"),
            ])
        }
        // A letter the dead-letter store refuses every time (it cannot be written, a bug) leaves
        // after `deadLetterDeliveryLimit` deliveries for a queue nobody consumes, where an operator
        // finds it, instead of going round for ever.
        policies.append(policy(for: deadLetterQueue, [
            "delivery-limit": .int(deadLetterDeliveryLimit),
            "dead-letter-exchange": .string(unstoredQueue),
            "dead-letter-strategy": .string("at-least-once"),
            "overflow": .string("reject-publish"),
        ]))
        // A retry tier holds a message for its TTL, then dead-letters it back, keeping its routing
        // key (the queue it failed on), through the retry-return exchange.
        policies += retryTiers.map { tier in
            policy(for: tier.queue, [
                "message-ttl": .int(tier.delayMilliseconds),
                "dead-letter-exchange": .string(retryReturnExchange),
                "dead-letter-strategy": .string("at-least-once"),
                "overflow": .string("reject-publish"),
            ])
        }

        return BrokerDefinitions(
            exchanges: exchanges.sorted { $0.name < $1.name },
            queues: queues.sorted { $0.name < $1.name },
            bindings: bindings.sorted { ($0.source, $0.destination, $0.routing_key) < ($1.source, $1.destination, $1.routing_key) },
            policies: policies.sorted { $0.name < $1.name })
    }

    static func regexEscaped(_ name: String) -> String {
        var out = ""
        for c in name {
            if "\\^$.|?*+()[]{}".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
