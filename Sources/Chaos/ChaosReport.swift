public import FoundationEssentials

/// What a chaos run did and found: written as JSON (`--report`), drawn (`--plot`), printed as a table.
public struct ChaosReport: Sendable, Codable {
    public struct Orders: Sendable, Codable {
        public var tried: Int
        public var accepted: Int
        public var completed: Int
        /// Cancelled orders by kind of reason: `out of stock`, `payment declined`, `cancelled by the customer`, `other`.
        public var cancelled: [String: Int]
        /// Orders a customer never got a 202 for.
        public var refused: Int
    }

    public struct Fault: Sendable, Codable {
        public var at: Double
        /// For a server: when the stop was complete and it was down.
        public var down: Double?
        public var until: Double
        public var kind: String
        public var summary: String
        public var error: String?
    }

    public struct Timeline: Sendable, Codable {
        /// Seconds from the start of shopping at which each order was accepted (202).
        public var accepted: [Double]
        /// Seconds from the start of shopping at which each order became terminal.
        public var finished: [Double]
    }

    public var scenario: ChaosScenario
    public var startedAt: Date
    public var orders: Orders
    public var faults: [Fault]
    /// Processes that ended (kills and anything else) and were started again by the supervisor.
    public var restarts: Int
    public var timeline: Timeline
    /// Requests the customers sent, and how many met a fault of the fleet.
    public var requests: Int
    public var retriedRequests: Int
    public var serverErrors: Int
    public var tooManyRequests: Int
    public var timeouts: Int
    public var connectionFailures: Int
    public var cartsRefilled: Int
    public var checks: [CheckResult]
    public var violations: [Violation]
    /// Copies of one email (or webhook call) received again with the same delivery id: at-least-once
    /// delivery to the outside world, which the id lets a receiver drop. Not a violation.
    public var redeliveredEmails: Int
    public var redeliveredWebhooks: Int
    /// When the last fault was over, and the last accepted order became terminal (seconds from the start).
    public var lastFaultOver: Double
    public var lastOrderTerminal: Double
    /// From the last fault over to the last order terminal (0 if every order ended before). It
    /// includes the orders the customers could place only after the faults (an outage holds them up).
    public var recovery: Double
    /// From the last fault over until every order accepted by then was terminal: how long the
    /// orders that lived through the faults took to settle.
    public var settled: Double
    /// From the last fault over until queues, outboxes and sagas were all quiet.
    public var quietAfter: Double
    public var seconds: Double
    public var passed: Bool { violations.isEmpty }

    static func tenths(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded)).0" : "\(rounded)"
    }

    /// The kind of a cancel reason, for the counts.
    public static func kind(ofReason reason: String?) -> String {
        Ledger.businessReasons.first { (reason ?? "").contains($0) } ?? "other"
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }

    /// The table `shopfleet chaos run` prints.
    public func text(violationsShown: Int = 40) -> String {
        var lines: [String] = []
        let cancelled = orders.cancelled.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        lines.append("chaos run '\(scenario.name)', seed \(scenario.seed), replicas \(scenario.replicas): \(Int(seconds)) s")
        lines.append("orders: \(orders.tried) tried, \(orders.accepted) accepted, \(orders.completed) completed, "
                     + "\(orders.cancelled.values.reduce(0, +)) cancelled (\(cancelled.isEmpty ? "none" : cancelled)), \(orders.refused) never accepted")
        let byKind = Dictionary(grouping: faults, by: \.kind).sorted { $0.key < $1.key }.map { "\($0.value.count) \($0.key)" }
        lines.append("faults: \(faults.count) (\(byKind.joined(separator: ", "))); \(restarts) process restarts")
        lines.append("customers: \(requests) requests, \(retriedRequests) sent again (\(serverErrors) 5xx, \(tooManyRequests) 429, \(timeouts) timeouts, "
                     + "\(connectionFailures) refused connections), \(cartsRefilled) carts filled again")
        lines.append("last fault over at \(Self.tenths(lastFaultOver)) s, last order terminal at \(Self.tenths(lastOrderTerminal)) s: "
                     + "recovered \(Self.tenths(recovery)) s after the last fault; the orders accepted by then settled \(Self.tenths(settled)) s after it; "
                     + "quiet \(Self.tenths(quietAfter)) s after it")
        lines.append("emails received again with the same Message-ID (dropped by a receiver): \(redeliveredEmails); webhook calls: \(redeliveredWebhooks)")
        lines.append("")
        let width = (checks.map(\.name.count).max() ?? 5) + 2
        lines.append("CHECK".padded(width) + "RESULT      PROMISE")
        for check in checks {
            let result = check.passed ? "ok" : "\(check.violations) broken"
            lines.append(check.name.padded(width) + result.padded(12) + check.promise)
        }
        if !violations.isEmpty {
            lines.append("")
            lines.append("\(violations.count) violations\(violations.count > violationsShown ? " (the first \(violationsShown); all in the report)" : ""):")
            for violation in violations.prefix(violationsShown) { lines.append("  \(violation)") }
        }
        lines.append("")
        lines.append(passed ? "PASSED: nothing lost, nothing done twice, every order ended" : "FAILED")
        return lines.joined(separator: "\n")
    }
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
}
