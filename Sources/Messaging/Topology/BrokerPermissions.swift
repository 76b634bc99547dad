public import FoundationEssentials

/// What each service of the fleet may do on the broker, derived from the topology so the two
/// cannot drift: one RabbitMQ user per service (`shopfleet-<service>`), with configure, write and
/// read rights (regular expressions, anchored here) that match exactly
///
/// - the queues it consumes (read): the queues named after it (`orders.commands`,
///   `orders.saga-events`, …), for the dead-letter store also the dead-letter queue;
/// - the exchanges it publishes to (write): its own topic (`orders.events`), the default exchange
///   (commands to another service's queue, requests, replies to direct reply-to), the retry tiers
///   and the dead-letter exchange (the runtime's redrive);
/// - and nothing to configure: queues, exchanges and bindings are the topology's, made by
///   `topology apply` under the management identity.
///
/// The edge, which consumes no queue of the topology, publishes commands and queries on the
/// default exchange and follows the topics in `edge.follows` with exclusive, auto-deleted queues
/// named `edge.<…>`, which it may configure, bind (write on the queue, read on the topic) and read.
///
/// RabbitMQ cannot narrow the default exchange by routing key (topic permissions apply to topic
/// exchanges only), so a service allowed to send a command can publish to any queue by name;
/// every other right is exact.
public struct BrokerPermissions: Codable, Sendable, Equatable {
    public var user: String
    public var service: String
    public var configure: String
    public var write: String
    public var read: String

    public init(user: String, service: String, configure: String, write: String, read: String) {
        self.user = user
        self.service = service
        self.configure = configure
        self.write = write
        self.read = read
    }

    /// The broker user of a service.
    public static func user(of service: String) -> String { "shopfleet-\(service)" }

    /// `^(a|b)$` for names taken literally; `^$` (nothing) for none.
    static func anchored(_ names: [String], patterns: [String] = []) -> String {
        let all = names.map(Topology.regexEscaped) + patterns
        return all.isEmpty ? "^$" : "^(" + all.joined(separator: "|") + ")$"
    }
}

extension Topology {
    /// The services the topology has users for: every prefix of an authored queue's name, the
    /// dead-letter store and the edge, sorted.
    public var services: [String] {
        var names = Set(queues.compactMap { $0.name.split(separator: ".").first.map(String.init) })
        names.insert(Self.deadLetterService)
        names.insert(Self.edgeService)
        return names.sorted()
    }

    public static let deadLetterService = "deadletters"
    public static let edgeService = "edge"

    /// The queues `service` consumes.
    public func queues(of service: String) -> [String] {
        let own = queues.map(\.name).filter { $0.hasPrefix(service + ".") }
        return service == Self.deadLetterService ? [deadLetterQueue] + own : own
    }

    /// The rights of every service, sorted by service.
    public func permissions() -> [BrokerPermissions] {
        services.map(permissions(of:))
    }

    public func permissions(of service: String) -> BrokerPermissions {
        let user = BrokerPermissions.user(of: service)
        if service == Self.edgeService {
            let own = "edge\\..+"
            return BrokerPermissions(user: user, service: service,
                                     configure: BrokerPermissions.anchored([], patterns: [own]),
                                     write: BrokerPermissions.anchored(["amq.default"], patterns: [own]),
                                     read: BrokerPermissions.anchored(edgeFollows, patterns: [own]))
        }
        var write = ["amq.default", deadLetterExchange] + retryTiers.map(\.queue)
        if topics.contains("\(service).events") { write.append("\(service).events") }
        return BrokerPermissions(user: user, service: service, configure: "^$",
                                 write: BrokerPermissions.anchored(write.sorted()),
                                 read: BrokerPermissions.anchored(queues(of: service).sorted()))
    }

    /// `topology/permissions.json`: what `topology apply` gives each service's user, rendered
    /// with the definitions (no passwords).
    public func renderPermissions() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(permissions()), as: UTF8.self) + "\n"
    }
}
