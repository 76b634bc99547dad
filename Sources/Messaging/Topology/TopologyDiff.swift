/// What a live broker lacks or has different from the definitions we want. Things on the broker
/// that the file does not mention are not reported (other tenants may share the virtual host),
/// except a binding between our own exchange and our own queue that the file no longer has: a
/// subscription filter that was narrowed leaves one behind, since loading definitions only adds.
public struct TopologyDiff: Sendable, Equatable {
    public enum Difference: Sendable, Equatable, CustomStringConvertible {
        case missingExchange(String)
        case exchangeDiffers(String, String)
        case missingQueue(String)
        case queueDiffers(String, String)
        case missingBinding(String)
        case extraBinding(BrokerDefinitions.Binding)
        case missingPolicy(String)
        case policyDiffers(String, String)

        public var description: String {
            switch self {
            case .missingExchange(let name): return "missing exchange '\(name)'"
            case .exchangeDiffers(let name, let what): return "exchange '\(name)' differs: \(what)"
            case .missingQueue(let name): return "missing queue '\(name)'"
            case .queueDiffers(let name, let what): return "queue '\(name)' differs: \(what)"
            case .missingBinding(let summary): return "missing binding \(summary)"
            case .extraBinding(let binding): return "binding not in the topology: \(binding.summary)"
            case .missingPolicy(let name): return "missing policy '\(name)'"
            case .policyDiffers(let name, let what): return "policy '\(name)' differs: \(what)"
            }
        }
    }

    public var differences: [Difference]
    public var isEmpty: Bool { differences.isEmpty }

    public init(want: BrokerDefinitions, have: BrokerDefinitions) {
        var out: [Difference] = []
        let liveExchanges = Dictionary(have.exchanges.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for e in want.exchanges {
            guard let live = liveExchanges[e.name] else { out.append(.missingExchange(e.name)); continue }
            var what: [String] = []
            if live.type != e.type { what.append("type is \(live.type), want \(e.type)") }
            if live.durable != e.durable { what.append("durable is \(live.durable), want \(e.durable)") }
            if live.auto_delete != e.auto_delete { what.append("auto_delete is \(live.auto_delete), want \(e.auto_delete)") }
            if live.internal != e.internal { what.append("internal is \(live.internal), want \(e.internal)") }
            what += Self.compare("argument", want: e.arguments, have: live.arguments)
            if !what.isEmpty { out.append(.exchangeDiffers(e.name, what.joined(separator: "; "))) }
        }
        let liveQueues = Dictionary(have.queues.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for q in want.queues {
            guard let live = liveQueues[q.name] else { out.append(.missingQueue(q.name)); continue }
            var what: [String] = []
            if live.durable != q.durable { what.append("durable is \(live.durable), want \(q.durable)") }
            if live.auto_delete != q.auto_delete { what.append("auto_delete is \(live.auto_delete), want \(q.auto_delete)") }
            what += Self.compare("argument", want: q.arguments, have: live.arguments)
            if !what.isEmpty { out.append(.queueDiffers(q.name, what.joined(separator: "; "))) }
        }
        let liveBindings = Set(have.bindings)
        for b in want.bindings where !liveBindings.contains(b) {
            out.append(.missingBinding(b.summary))
        }
        let wanted = Set(want.bindings)
        let ourExchanges = Set(want.exchanges.map(\.name))
        let ourQueues = Set(want.queues.map(\.name))
        for b in have.bindings where !wanted.contains(b) && ourExchanges.contains(b.source)
            && b.destination_type == "queue" && ourQueues.contains(b.destination) {
            out.append(.extraBinding(b))
        }
        let livePolicies = Dictionary(have.policies.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for p in want.policies {
            guard let live = livePolicies[p.name] else { out.append(.missingPolicy(p.name)); continue }
            var what: [String] = []
            if live.pattern != p.pattern { what.append("pattern is \(live.pattern), want \(p.pattern)") }
            if live.applyTo != p.applyTo { what.append("apply-to is \(live.applyTo), want \(p.applyTo)") }
            if live.priority != p.priority { what.append("priority is \(live.priority), want \(p.priority)") }
            what += Self.compare("definition", want: p.definition, have: live.definition)
            if !what.isEmpty { out.append(.policyDiffers(p.name, what.joined(separator: "; "))) }
        }
        differences = out
    }

    static func compare(_ label: String, want: [String: JSONValue], have: [String: JSONValue]) -> [String] {
        var out: [String] = []
        for key in Set(want.keys).union(have.keys).sorted() {
            switch (want[key], have[key]) {
            case let (w?, h?) where w != h: out.append("\(label) \(key) is \(h), want \(w)")
            case let (w?, nil): out.append("\(label) \(key) is missing, want \(w)")
            case let (nil, h?): out.append("\(label) \(key) is \(h), want none")
            default: break
            }
        }
        return out
    }
}
