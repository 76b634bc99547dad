public import FoundationEssentials

/// What the stores hold once a run is quiet: read from each service's own store (chaos is an
/// operator tool), then checked by ``Ledger/check(_:_:)`` without any I/O.
public struct LedgerSnapshot: Sendable, Codable {
    public struct Order: Sendable, Codable, Equatable {
        public var id: String
        public var status: String
        public var reason: String?
        public var total: Int
        public var sagaState: String?
        public var updatedAt: Date
        /// SKU → quantity.
        public var lines: [String: Int]
        public init(id: String, status: String, reason: String?, total: Int, sagaState: String?, updatedAt: Date, lines: [String: Int]) {
            self.id = id
            self.status = status
            self.reason = reason
            self.total = total
            self.sagaState = sagaState
            self.updatedAt = updatedAt
            self.lines = lines
        }
    }

    public struct Stock: Sendable, Codable, Equatable {
        public var onHand: Int
        public var reserved: Int
        public init(onHand: Int, reserved: Int) {
            self.onHand = onHand
            self.reserved = reserved
        }
    }

    /// A PaymentIntent of the gateway's ledger.
    public struct Intent: Sendable, Codable, Equatable {
        public var id: String
        public var orderID: String?
        public var status: String
        public var amount: Int
        public var amountReceived: Int
        public init(id: String, orderID: String?, status: String, amount: Int, amountReceived: Int) {
            self.id = id
            self.orderID = orderID
            self.status = status
            self.amount = amount
            self.amountReceived = amountReceived
        }
    }

    /// One email or webhook call received: the order and event it names, and its delivery id
    /// (the same on every attempt to send it, so that a receiver can drop a copy).
    public struct Delivery: Sendable, Codable, Equatable {
        public var orderID: String
        public var event: String
        public var deliveryID: String
        public init(orderID: String, event: String, deliveryID: String) {
            self.orderID = orderID
            self.event = event
            self.deliveryID = deliveryID
        }
    }

    public struct Letter: Sendable, Codable, Equatable {
        public var id: String
        public var messageID: String
        public var type: String
        public var queue: String
        public var errorType: String
        public var reason: String
        public init(id: String, messageID: String, type: String, queue: String, errorType: String, reason: String) {
            self.id = id
            self.messageID = messageID
            self.type = type
            self.queue = queue
            self.errorType = errorType
            self.reason = reason
        }
    }

    public var orders: [String: Order] = [:]
    public var stock: [String: Stock] = [:]
    /// Reservations still holding stock (`reserved` or `pending`).
    public var openReservations: [String] = []
    public var intents: [Intent] = []
    public var mails: [Delivery] = []
    /// Nil when the run has no webhook receiver.
    public var webhooks: [Delivery]?
    public var deadLetters: [Letter] = []
    /// Queue → messages in it.
    public var queues: [String: Int] = [:]
    /// Schema → outbox rows not yet published.
    public var unpublishedOutbox: [String: Int] = [:]
    /// Sagas not in a terminal state, with their state.
    public var openSagas: [String: String] = [:]
    /// Sagas whose pending timeout is overdue.
    public var overdueTimeouts: [String] = []
    /// Notifications recorded but neither sent nor refused.
    public var pendingNotifications: Int = 0

    public init() {}
}

/// What the run expected: the orders its customers placed, which of them the edge accepted, the
/// stock it started with, the dead letters it caused on purpose.
public struct LedgerExpectations: Sendable {
    /// Order id → what its customer asked for, for every order the edge answered 202.
    public var accepted: [String: ShopperMix.Order]
    /// Orders whose customer never got a 202, with the last answer.
    public var refused: [(order: ShopperMix.Order, lastAnswer: String)]
    /// SKU → units on hand before the first order.
    public var initialStock: [String: Int]
    /// Message id → why the run dead-lettered it on purpose.
    public var injectedLetters: [String: String]
    /// Orders the run meant to place.
    public var planned: Int
    /// Copies of one email or webhook call (the same delivery sent again) the run's faults can
    /// explain: each needs a notifications process killed or frozen, or the database lost, between
    /// the send and its commit.
    public var copiesExplained: Int

    public init(accepted: [String: ShopperMix.Order], refused: [(order: ShopperMix.Order, lastAnswer: String)], initialStock: [String: Int],
                injectedLetters: [String: String], planned: Int, copiesExplained: Int) {
        self.accepted = accepted
        self.refused = refused
        self.initialStock = initialStock
        self.injectedLetters = injectedLetters
        self.planned = planned
        self.copiesExplained = copiesExplained
    }
}

/// One broken promise, naming what it is about (an order, a SKU, a message) and how.
public struct Violation: Sendable, Codable, Equatable, CustomStringConvertible {
    public var check: String
    public var subject: String
    public var detail: String
    public var description: String { "\(check): \(subject): \(detail)" }
}

/// The ledger's checks: a name, the promise, and whether it held.
public struct CheckResult: Sendable, Codable, Equatable {
    public var name: String
    public var promise: String
    public var violations: Int
    public var passed: Bool { violations == 0 }
}

public enum Ledger {
    /// Why an order may be cancelled: a reason of the business, never a fault of the fleet.
    public static let businessReasons = ["out of stock", "payment declined", "cancelled by the customer"]

    public static let events = (confirmed: "orders.OrderConfirmed.v1", cancelled: "orders.OrderCancelled.v1")

    /// Every check, in the order they are reported, and the violations found.
    public static func check(_ snapshot: LedgerSnapshot, _ expected: LedgerExpectations) -> (checks: [CheckResult], violations: [Violation]) {
        var all: [Violation] = []
        var results: [CheckResult] = []
        func run(_ name: String, _ promise: String, _ body: (inout [Violation]) -> Void) {
            var found: [Violation] = []
            body(&found)
            results.append(CheckResult(name: name, promise: promise, violations: found.count))
            all += found
        }
        let sortedAccepted = expected.accepted.sorted { $0.value.number < $1.value.number }

        run("accepted", "every planned order was tried and accepted (202) in the end; the store holds no order nobody was told of") { found in
            let tried = expected.accepted.count + expected.refused.count
            if tried != expected.planned {
                found.append(Violation(check: "accepted", subject: "the run", detail: "\(tried) of \(expected.planned) orders were tried (customers who could not sign in?)"))
            }
            for (order, answer) in expected.refused.sorted(by: { $0.order.number < $1.order.number }) {
                found.append(Violation(check: "accepted", subject: "order #\(order.number)", detail: "never accepted; last answer: \(answer)"))
            }
            for id in snapshot.orders.keys.sorted() where expected.accepted[id] == nil {
                found.append(Violation(check: "accepted", subject: "order \(id)", detail: "in the orders store, but no customer got a 202 for it"))
            }
        }
        run("terminal", "every accepted order exists once and is completed or cancelled, its saga too") { found in
            for (id, _) in sortedAccepted {
                guard let order = snapshot.orders[id] else {
                    found.append(Violation(check: "terminal", subject: "order \(id)", detail: "answered 202 but not in the orders store"))
                    continue
                }
                if !["completed", "cancelled"].contains(order.status) || order.sagaState != order.status {
                    found.append(Violation(check: "terminal", subject: "order \(id)",
                                           detail: "is \(order.status) (saga \(order.sagaState ?? "none")): \(order.reason ?? "no reason")"))
                }
            }
        }
        run("business", "an order is cancelled only for a business reason (out of stock, declined, customer cancel)") { found in
            for (id, order) in snapshot.orders.sorted(by: { $0.key < $1.key }) where order.status == "cancelled" {
                let reason = order.reason ?? ""
                if !businessReasons.contains(where: { reason.contains($0) }) {
                    found.append(Violation(check: "business", subject: "order \(id)", detail: "cancelled for a reason that is no business reason: \(reason)"))
                }
            }
        }
        run("outcome", "an order nothing stops completes; a declined card cancels; a cancel's reason fits what the order asked for") { found in
            for (id, asked) in sortedAccepted {
                guard let order = snapshot.orders[id] else { continue }
                if asked.mustComplete, order.status == "cancelled" {
                    found.append(Violation(check: "outcome", subject: "order \(id)", detail: "good card, plenty of stock, no cancel, yet cancelled: \(order.reason ?? "")"))
                }
                if asked.card != .good, order.status == "completed" {
                    found.append(Violation(check: "outcome", subject: "order \(id)", detail: "completed with the card \(asked.card.rawValue), which the gateway declines"))
                }
                guard order.status == "cancelled" else { continue }
                let reason = order.reason ?? ""
                let fits = (reason.contains("payment declined") && asked.card != .good) || (reason.contains("cancelled by the customer") && asked.cancels)
                    || (reason.contains("out of stock") && asked.scarce)
                if !fits {
                    found.append(Violation(check: "outcome", subject: "order \(id)",
                                           detail: "cancelled for '\(reason)', which does not fit what it asked for (card \(asked.card.rawValue), cancel \(asked.cancels), scarce \(asked.scarce))"))
                }
            }
        }
        run("stock", "on hand fell by exactly what completed orders bought; nothing left reserved") { found in
            var sold: [String: Int] = [:]
            for order in snapshot.orders.values where order.status == "completed" {
                for (sku, quantity) in order.lines { sold[sku, default: 0] += quantity }
            }
            for (sku, initial) in expected.initialStock.sorted(by: { $0.key < $1.key }) {
                guard let stock = snapshot.stock[sku] else {
                    found.append(Violation(check: "stock", subject: "SKU \(sku)", detail: "missing from inventory"))
                    continue
                }
                let expectedOnHand = initial - sold[sku, default: 0]
                if stock.onHand != expectedOnHand {
                    found.append(Violation(check: "stock", subject: "SKU \(sku)",
                                           detail: "on hand \(stock.onHand), expected \(expectedOnHand) (\(initial) less \(sold[sku, default: 0]) sold)"))
                }
                if stock.reserved != 0 {
                    found.append(Violation(check: "stock", subject: "SKU \(sku)", detail: "\(stock.reserved) units still reserved"))
                }
            }
            for reservation in snapshot.openReservations.sorted() {
                found.append(Violation(check: "stock", subject: "reservation \(reservation)", detail: "still holds stock"))
            }
        }
        run("gateway", "at most one intent per order, none left authorized, captured exactly the completed orders' totals") { found in
            var byOrder: [String: [LedgerSnapshot.Intent]] = [:]
            for intent in snapshot.intents { byOrder[intent.orderID ?? "(none)", default: []].append(intent) }
            for (order, intents) in byOrder.sorted(by: { $0.key < $1.key }) {
                if intents.count > 1 {
                    found.append(Violation(check: "gateway", subject: "order \(order)", detail: "\(intents.count) payment intents: \(intents.map(\.id).joined(separator: ", "))"))
                }
                for intent in intents where intent.status == "requires_capture" {
                    found.append(Violation(check: "gateway", subject: "order \(order)", detail: "intent \(intent.id) authorized and never captured or voided"))
                }
                let state = snapshot.orders[order]?.status
                for intent in intents where intent.status == "succeeded" && state != "completed" {
                    found.append(Violation(check: "gateway", subject: "order \(order)", detail: "captured \(intent.amountReceived) but the order is \(state ?? "unknown")"))
                }
            }
            var completedTotal = 0
            for (id, order) in snapshot.orders.sorted(by: { $0.key < $1.key }) where order.status == "completed" {
                completedTotal += order.total
                let captured = (byOrder[id] ?? []).filter { $0.status == "succeeded" }
                if captured.count != 1 || captured.first?.amountReceived != order.total {
                    found.append(Violation(check: "gateway", subject: "order \(id)",
                                           detail: "completed for \(order.total), captured: \(captured.map { String($0.amountReceived) }.joined(separator: ", ").nonEmpty ?? "nothing")"))
                }
            }
            let capturedTotal = snapshot.intents.filter { $0.status == "succeeded" }.reduce(0) { $0 + $1.amountReceived }
            if capturedTotal != completedTotal {
                found.append(Violation(check: "gateway", subject: "the gateway's ledger", detail: "captured \(capturedTotal) in all, completed orders total \(completedTotal)"))
            }
        }
        run("emails", "one email per order per event; a copy only where a fault struck between the send and its commit") { found in
            found += deliveries(snapshot.mails, orders: snapshot.orders, accepted: expected.accepted, check: "emails", what: "email")
            let copies = redeliveredCopies(snapshot.mails)
            if copies > expected.copiesExplained {
                found.append(Violation(check: "emails", subject: "the SMTP sink", detail: "\(copies) emails received twice, more than the \(expected.copiesExplained) the faults explain"))
            }
        }
        if let webhooks = snapshot.webhooks {
            run("webhooks", "one webhook call per order per event; a copy only where a fault struck between the call and its commit") { found in
                found += deliveries(webhooks, orders: snapshot.orders, accepted: expected.accepted, check: "webhooks", what: "webhook call")
                let copies = redeliveredCopies(webhooks)
                if copies > expected.copiesExplained {
                    found.append(Violation(check: "webhooks", subject: "the webhook receiver", detail: "\(copies) calls received twice, more than the \(expected.copiesExplained) the faults explain"))
                }
            }
        }
        run("dead letters", "no dead letter but those the run made on purpose, each with its reason") { found in
            for letter in snapshot.deadLetters.sorted(by: { $0.id < $1.id }) {
                if let why = expected.injectedLetters[letter.messageID] {
                    if letter.errorType != why {
                        found.append(Violation(check: "dead letters", subject: "message \(letter.messageID)",
                                               detail: "dead-lettered on purpose as \(why), stored as \(letter.errorType): \(letter.reason)"))
                    }
                } else {
                    found.append(Violation(check: "dead letters", subject: "message \(letter.messageID) (\(letter.type))",
                                           detail: "dead letter from \(letter.queue): \(letter.errorType): \(letter.reason)"))
                }
            }
            let stored = Set(snapshot.deadLetters.map(\.messageID))
            for (message, why) in expected.injectedLetters.sorted(by: { $0.key < $1.key }) where !stored.contains(message) {
                found.append(Violation(check: "dead letters", subject: "message \(message)", detail: "dead-lettered on purpose (\(why)) but not in the store"))
            }
        }
        run("quiet", "every queue drained, every outbox row published, no saga open, no timeout overdue, no notification pending") { found in
            for (queue, messages) in snapshot.queues.sorted(by: { $0.key < $1.key }) where messages > 0 {
                found.append(Violation(check: "quiet", subject: "queue \(queue)", detail: "\(messages) messages left"))
            }
            for (schema, rows) in snapshot.unpublishedOutbox.sorted(by: { $0.key < $1.key }) where rows > 0 {
                found.append(Violation(check: "quiet", subject: "outbox of \(schema)", detail: "\(rows) rows never published"))
            }
            for (saga, state) in snapshot.openSagas.sorted(by: { $0.key < $1.key }) {
                found.append(Violation(check: "quiet", subject: "saga \(saga)", detail: "still \(state)"))
            }
            for saga in snapshot.overdueTimeouts.sorted() {
                found.append(Violation(check: "quiet", subject: "saga \(saga)", detail: "its timeout is overdue"))
            }
            if snapshot.pendingNotifications > 0 {
                found.append(Violation(check: "quiet", subject: "notifications", detail: "\(snapshot.pendingNotifications) never sent"))
            }
        }
        return (results, all)
    }

    /// Each accepted order has what its outcome calls for, once: the confirmation when it was
    /// confirmed (a completed order always was), the cancellation when it was cancelled; never two
    /// different deliveries of one event.
    static func deliveries(_ received: [LedgerSnapshot.Delivery], orders: [String: LedgerSnapshot.Order],
                           accepted: [String: ShopperMix.Order], check: String, what: String) -> [Violation] {
        var distinct: [String: Set<String>] = [:]
        for delivery in received { distinct["\(delivery.orderID) \(delivery.event)", default: []].insert(delivery.deliveryID) }
        var found: [Violation] = []
        for id in accepted.keys.sorted() {
            guard let order = orders[id] else { continue }
            let confirmed = distinct["\(id) \(events.confirmed)"]?.count ?? 0
            let cancelled = distinct["\(id) \(events.cancelled)"]?.count ?? 0
            switch order.status {
            case "completed":
                if confirmed != 1 { found.append(Violation(check: check, subject: "order \(id)", detail: "completed, \(confirmed) confirmation \(what)s")) }
                if cancelled != 0 { found.append(Violation(check: check, subject: "order \(id)", detail: "completed, yet \(cancelled) cancellation \(what)s")) }
            case "cancelled":
                if cancelled != 1 { found.append(Violation(check: check, subject: "order \(id)", detail: "cancelled, \(cancelled) cancellation \(what)s")) }
                if confirmed > 1 { found.append(Violation(check: check, subject: "order \(id)", detail: "\(confirmed) different confirmation \(what)s")) }
            default:
                break
            }
        }
        return found
    }

    /// Copies of one delivery a receiver got more than once (same delivery id): at-least-once
    /// delivery to the outside world, which the id lets the receiver drop. Counted, not a violation.
    public static func redeliveredCopies(_ received: [LedgerSnapshot.Delivery]) -> Int {
        var seen: [String: Int] = [:]
        for delivery in received { seen[delivery.deliveryID, default: 0] += 1 }
        return seen.values.reduce(0) { $0 + max(0, $1 - 1) }
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
