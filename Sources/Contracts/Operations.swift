public import FoundationEssentials
public import Messaging

// What operators ask of the fleet through the edge's admin API (the console): the sagas of the
// orders service and the dead-letter store. The CLI (`shopfleet saga`, `shopfleet dlq`) reads the
// same data with the operator's database identity; the edge never opens a database, so it asks
// the services that own the data.

// MARK: - Sagas (orders)

/// One saga as an operator lists it.
public struct SagaSummary: Codable, Sendable, Equatable {
    public var id: String
    public var type: String
    public var state: String
    /// What the customer sees (``OrderStatus``).
    public var status: String
    public var terminal: Bool
    public var customerId: String?
    /// ISO 8601.
    public var startedAt: String
    public var updatedAt: String
    public init(id: String, type: String, state: String, status: String, terminal: Bool, customerId: String?, startedAt: String,
                updatedAt: String) {
        self.id = id
        self.type = type
        self.state = state
        self.status = status
        self.terminal = terminal
        self.customerId = customerId
        self.startedAt = startedAt
        self.updatedAt = updatedAt
    }
}

/// Sagas, newest first. Every condition given must hold.
public struct ListSagas: Query, Contract, Validatable {
    public typealias Reply = [SagaSummary]
    public static let type = "orders.ListSagas.v1"
    public static let example = ListSagas(states: ["authorizing_payment"], olderThanSeconds: 600, customerID: PlaceOrder.example.customerID,
                                          openOnly: true, limit: 50)
    /// The longest `olderThanSeconds` (ten years): anything longer is a mistake, not a filter.
    public static let longestAge: Double = 315_360_000
    public var states: [String]
    /// Only sagas not moved for at least this long.
    public var olderThanSeconds: Double?
    public var customerID: String?
    public var openOnly: Bool
    public var limit: Int
    public init(states: [String] = [], olderThanSeconds: Double? = nil, customerID: String? = nil, openOnly: Bool = false, limit: Int = 50) {
        self.states = states
        self.olderThanSeconds = olderThanSeconds
        self.customerID = customerID
        self.openOnly = openOnly
        self.limit = limit
    }
    public func validate() throws(ValidationFailure) {
        guard (1...1000).contains(limit) else { throw ValidationFailure("limit must be 1 to 1000, not \(limit)") }
        if let olderThanSeconds, !(0...Self.longestAge).contains(olderThanSeconds) {
            throw ValidationFailure("olderThanSeconds must be 0 to \(Int(Self.longestAge)) (ten years)")
        }
        guard states.count <= 20 else { throw ValidationFailure("at most 20 states") }
    }
}

/// A saga that has not moved for a while, and what it waits for.
public struct StuckSaga: Codable, Sendable, Equatable {
    public var saga: SagaSummary
    /// What it waits for: the command it sent last without an answer, its pending timeout.
    public var reason: String
    public init(saga: SagaSummary, reason: String) {
        self.saga = saga
        self.reason = reason
    }
}

/// Open sagas not moved for `olderThanSeconds`, the longest stuck first.
public struct ListStuckSagas: Query, Contract, Validatable {
    public typealias Reply = [StuckSaga]
    public static let type = "orders.ListStuckSagas.v1"
    public static let example = ListStuckSagas(olderThanSeconds: 600, limit: 200)
    public var olderThanSeconds: Double
    public var limit: Int
    public init(olderThanSeconds: Double, limit: Int = 200) {
        self.olderThanSeconds = olderThanSeconds
        self.limit = limit
    }
    public func validate() throws(ValidationFailure) {
        guard (0...ListSagas.longestAge).contains(olderThanSeconds) else {
            throw ValidationFailure("olderThanSeconds must be 0 to \(Int(ListSagas.longestAge)) (ten years)")
        }
        guard (1...1000).contains(limit) else { throw ValidationFailure("limit must be 1 to 1000, not \(limit)") }
    }
}

/// One line of a saga's timeline (`shopfleet saga show`).
public struct SagaTimelineStep: Codable, Sendable, Equatable {
    public var seq: Int
    /// ISO 8601 with milliseconds.
    public var at: String
    /// started, received, ignored, timeout, sent, published, scheduled.
    public var kind: String
    public var name: String
    public var messageType: String?
    public var messageId: String?
    public var stateBefore: String?
    public var stateAfter: String?
    public var detail: String?
    public init(seq: Int, at: String, kind: String, name: String, messageType: String?, messageId: String?, stateBefore: String?,
                stateAfter: String?, detail: String?) {
        self.seq = seq
        self.at = at
        self.kind = kind
        self.name = name
        self.messageType = messageType
        self.messageId = messageId
        self.stateBefore = stateBefore
        self.stateAfter = stateAfter
        self.detail = detail
    }
}

public struct SagaTimeline: Codable, Sendable, Equatable {
    public struct Timeout: Codable, Sendable, Equatable {
        public var name: String
        public var dueAt: String
        public init(name: String, dueAt: String) {
            self.name = name
            self.dueAt = dueAt
        }
    }
    public var saga: SagaSummary
    /// The saga's data (the order as the saga holds it).
    public var data: JSONValue
    public var steps: [SagaTimelineStep]
    public var pendingTimeout: Timeout?
    public init(saga: SagaSummary, data: JSONValue, steps: [SagaTimelineStep], pendingTimeout: Timeout?) {
        self.saga = saga
        self.data = data
        self.steps = steps
        self.pendingTimeout = pendingTimeout
    }
}

/// One saga with its step log; nil when there is none.
public struct GetSagaTimeline: Query, Contract, Validatable {
    public typealias Reply = SagaTimeline?
    public static let type = "orders.GetSagaTimeline.v1"
    public static let example = GetSagaTimeline(sagaID: PlaceOrder.example.orderID)
    public var sagaID: String
    public init(sagaID: String) { self.sagaID = sagaID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(sagaID, "sagaID") }
}

/// A saga definition's state machine, for drawing.
public struct SagaDiagram: Codable, Sendable, Equatable {
    public struct State: Codable, Sendable, Equatable {
        public var name: String
        public var terminal: Bool
        /// The order status a saga in this state shows.
        public var status: String
        public init(name: String, terminal: Bool, status: String) {
            self.name = name
            self.terminal = terminal
            self.status = status
        }
    }
    public struct Transition: Codable, Sendable, Equatable {
        public var from: String
        public var to: String
        public var on: String
        public init(from: String, to: String, on: String) {
            self.from = from
            self.to = to
            self.on = on
        }
    }
    public var name: String
    public var initial: String
    public var states: [State]
    public var transitions: [Transition]
    /// The same as a Mermaid state diagram (`shopfleet saga graph`).
    public var mermaid: String
    public init(name: String, initial: String, states: [State], transitions: [Transition], mermaid: String) {
        self.name = name
        self.initial = initial
        self.states = states
        self.transitions = transitions
        self.mermaid = mermaid
    }
}

/// The definition of the saga named `name` (`checkout`); nil when the service has none by that name.
public struct GetSagaDefinition: Query, Contract {
    public typealias Reply = SagaDiagram?
    public static let type = "orders.GetSagaDefinition.v1"
    public static let example = GetSagaDefinition(name: "checkout")
    public var name: String
    public init(name: String) { self.name = name }
}

// MARK: - Dead letters

/// One stored dead letter, as `shopfleet dlq list` shows it.
public struct DeadLetter: Sendable, Codable, Equatable {
    public var id: String
    public var messageID: String
    public var type: String
    public var failedQueue: String
    public var exchange: String
    public var routingKey: String
    public var reason: String
    public var errorType: String
    public var attempts: Int
    /// How many times the message failed on its queue (a replay that failed again adds one).
    public var failures: Int
    public var firstFailedAt: Date
    public var lastFailedAt: Date
    public var sagaID: String?
    public var fingerprint: String
    /// `waiting`, `replaying` (a replay was asked for and is under way), `replayed` or `discarded`.
    public var status: String
    public var statusChangedAt: Date?
    /// Why it was discarded, or where it was replayed to.
    public var statusNote: String?
    public var replays: Int

    public init(id: String, messageID: String, type: String, failedQueue: String, exchange: String, routingKey: String, reason: String,
                errorType: String, attempts: Int, failures: Int, firstFailedAt: Date, lastFailedAt: Date, sagaID: String?,
                fingerprint: String, status: String, statusChangedAt: Date?, statusNote: String?, replays: Int) {
        self.id = id
        self.messageID = messageID
        self.type = type
        self.failedQueue = failedQueue
        self.exchange = exchange
        self.routingKey = routingKey
        self.reason = reason
        self.errorType = errorType
        self.attempts = attempts
        self.failures = failures
        self.firstFailedAt = firstFailedAt
        self.lastFailedAt = lastFailedAt
        self.sagaID = sagaID
        self.fingerprint = fingerprint
        self.status = status
        self.statusChangedAt = statusChangedAt
        self.statusNote = statusNote
        self.replays = replays
    }

    /// The statuses a letter can have.
    public static let statuses = ["waiting", "replaying", "replayed", "discarded"]

    /// Statuses as an operator names them (`shopfleet dlq --status`, the console's `status=`):
    /// `all` is every status (no condition, `[]`); anything else must be one of ``statuses``.
    public static func statuses(parsing given: [String]) throws(ValidationFailure) -> [String] {
        if given.contains("all") { return [] }
        for status in given where !statuses.contains(status) {
            throw ValidationFailure("'\(status.prefix(40))' is not one of \(statuses.joined(separator: ", ")), all")
        }
        return given
    }
}

/// The letters sharing a fingerprint.
public struct DeadLetterGroup: Sendable, Codable, Equatable {
    public var fingerprint: String
    public var type: String
    public var failedQueue: String
    public var errorType: String
    public var count: Int
    public var oldest: Date
    public var newest: Date
    public var sampleError: String
    /// The letter `sampleError` is from (the one that failed last).
    public var sampleId: String?
    public init(fingerprint: String, type: String, failedQueue: String, errorType: String, count: Int, oldest: Date, newest: Date,
                sampleError: String, sampleId: String?) {
        self.fingerprint = fingerprint
        self.type = type
        self.failedQueue = failedQueue
        self.errorType = errorType
        self.count = count
        self.oldest = oldest
        self.newest = newest
        self.sampleError = sampleError
        self.sampleId = sampleId
    }
}

/// Something that happened to a letter.
public struct DeadLetterEvent: Sendable, Codable, Equatable {
    public var at: Date
    /// `failed`, `replay-requested`, `replayed` or `discarded`.
    public var kind: String
    public var detail: String
    public var errorType: String?
    public var attempts: Int?
    public init(at: Date, kind: String, detail: String, errorType: String?, attempts: Int?) {
        self.at = at
        self.kind = kind
        self.detail = detail
        self.errorType = errorType
        self.attempts = attempts
    }
}

/// One letter with what is stored about it, its body as text for a person.
public struct DeadLetterDocument: Sendable, Codable, Equatable {
    public var letter: DeadLetter
    public var properties: JSONValue
    public var headers: JSONValue
    /// Pretty JSON when the body is JSON, the text when it is UTF-8, else hex.
    public var body: String
    public var history: [DeadLetterEvent]
    public init(letter: DeadLetter, properties: JSONValue, headers: JSONValue, body: String, history: [DeadLetterEvent]) {
        self.letter = letter
        self.properties = properties
        self.headers = headers
        self.body = body
        self.history = history
    }
}

/// Letters, oldest failure first. Every condition given must hold; `statuses` empty is any.
public struct ListDeadLetters: Query, Contract, Validatable {
    public typealias Reply = [DeadLetter]
    public static let type = "deadletters.ListDeadLetters.v1"
    public static let example = ListDeadLetters(ids: ["dl-0190c2d4"], fingerprint: "3f2a9c1d", sagaID: PlaceOrder.example.orderID,
                                                queue: "payments.commands", messageType: AuthorizePayment.type, statuses: ["waiting"],
                                                limit: 100)
    public var ids: [String]
    public var fingerprint: String?
    public var sagaID: String?
    public var queue: String?
    public var messageType: String?
    public var statuses: [String]
    public var limit: Int
    public init(ids: [String] = [], fingerprint: String? = nil, sagaID: String? = nil, queue: String? = nil, messageType: String? = nil,
                statuses: [String] = ["waiting"], limit: Int = 100) {
        self.ids = ids
        self.fingerprint = fingerprint
        self.sagaID = sagaID
        self.queue = queue
        self.messageType = messageType
        self.statuses = statuses
        self.limit = limit
    }
    public func validate() throws(ValidationFailure) {
        guard (1...10_000).contains(limit) else { throw ValidationFailure("limit must be 1 to 10000, not \(limit)") }
        guard ids.count <= 10_000 else { throw ValidationFailure("at most 10000 ids") }
        for status in statuses where !DeadLetter.statuses.contains(status) {
            throw ValidationFailure("status '\(status)' is not one of \(DeadLetter.statuses.joined(separator: ", "))")
        }
    }
}

/// Letters grouped by fingerprint, the largest group first.
public struct ListDeadLetterGroups: Query, Contract, Validatable {
    public typealias Reply = [DeadLetterGroup]
    public static let type = "deadletters.ListDeadLetterGroups.v1"
    public static let example = ListDeadLetterGroups(statuses: ["waiting"])
    public var statuses: [String]
    public init(statuses: [String] = ["waiting"]) { self.statuses = statuses }
    public func validate() throws(ValidationFailure) {
        for status in statuses where !DeadLetter.statuses.contains(status) {
            throw ValidationFailure("status '\(status)' is not one of \(DeadLetter.statuses.joined(separator: ", "))")
        }
    }
}

/// One letter; nil when there is none.
public struct GetDeadLetter: Query, Contract, Validatable {
    public typealias Reply = DeadLetterDocument?
    public static let type = "deadletters.GetDeadLetter.v1"
    public static let example = GetDeadLetter(letterID: "dl-0190c2d4")
    public var letterID: String
    public init(letterID: String) { self.letterID = letterID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(letterID, "letterID") }
}

/// For each saga named that has waiting letters: how many, and the newest one's reason.
public struct CountWaitingDeadLetters: Query, Contract, Validatable {
    public struct Waiting: Codable, Sendable, Equatable {
        public var count: Int
        public var newestReason: String
        public var newestType: String
        public init(count: Int, newestReason: String, newestType: String) {
            self.count = count
            self.newestReason = newestReason
            self.newestType = newestType
        }
    }
    public typealias Reply = [String: Waiting]
    public static let type = "deadletters.CountWaitingDeadLetters.v1"
    public static let example = CountWaitingDeadLetters(sagaIDs: [PlaceOrder.example.orderID])
    public var sagaIDs: [String]
    public init(sagaIDs: [String]) { self.sagaIDs = sagaIDs }
    public func validate() throws(ValidationFailure) {
        guard sagaIDs.count <= 1000 else { throw ValidationFailure("at most 1000 saga ids") }
    }
}

/// Sends letters back to the queues they failed on, at most `ratePerSecond`, with their message
/// ids (a message that was handled after all is not handled twice). Letters not waiting (or, with
/// `again`, not replayed either) are left alone.
public struct ReplayDeadLetters: Command, Contract, Validatable {
    public static let type = "deadletters.ReplayDeadLetters.v1"
    public static let example = ReplayDeadLetters(letterIDs: ["dl-0190c2d4"], ratePerSecond: 10, again: false, requestedBy: "cus_0190c2d4")
    public static let maximumLetters = 10_000
    public var letterIDs: [String]
    public var ratePerSecond: Double
    public var again: Bool
    /// Who asked (the operator's customer id), kept in the letters' history.
    public var requestedBy: String
    public init(letterIDs: [String], ratePerSecond: Double, again: Bool, requestedBy: String) {
        self.letterIDs = letterIDs
        self.ratePerSecond = ratePerSecond
        self.again = again
        self.requestedBy = requestedBy
    }
    public func validate() throws(ValidationFailure) {
        guard (1...Self.maximumLetters).contains(letterIDs.count) else {
            throw ValidationFailure("letterIDs must name 1 to \(Self.maximumLetters) letters, not \(letterIDs.count)")
        }
        guard ratePerSecond > 0, ratePerSecond <= 1000 else { throw ValidationFailure("ratePerSecond must be more than 0 and at most 1000") }
        try Validation.text(requestedBy, "requestedBy", max: 200)
    }
}

/// Marks letters discarded with a reason (they stay in the store, for the record); answers the ids
/// that were discarded (not those discarded before).
public struct DiscardDeadLetters: Query, Contract, Validatable {
    public typealias Reply = [String]
    public static let type = "deadletters.DiscardDeadLetters.v1"
    public static let example = DiscardDeadLetters(letterIDs: ["dl-0190c2d4"], reason: "the order was refunded by hand",
                                                   requestedBy: "cus_0190c2d4", statuses: ["waiting", "replaying"])
    /// What the console discards: a waiting letter, or one whose replay has not gone yet.
    public static let discardable = ["waiting", "replaying"]
    public var letterIDs: [String]
    public var reason: String
    public var requestedBy: String
    /// Only letters in these statuses (checked under the letter's lock, so a letter replayed
    /// meanwhile is left alone); nil: any but discarded.
    public var statuses: [String]?
    public init(letterIDs: [String], reason: String, requestedBy: String, statuses: [String]? = nil) {
        self.letterIDs = letterIDs
        self.reason = reason
        self.requestedBy = requestedBy
        self.statuses = statuses
    }
    public func validate() throws(ValidationFailure) {
        guard (1...ReplayDeadLetters.maximumLetters).contains(letterIDs.count) else {
            throw ValidationFailure("letterIDs must name 1 to \(ReplayDeadLetters.maximumLetters) letters, not \(letterIDs.count)")
        }
        try Validation.text(reason, "reason", max: 500)
        try Validation.text(requestedBy, "requestedBy", max: 200)
    }
}
