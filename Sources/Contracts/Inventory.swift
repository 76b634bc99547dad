public import Messaging

/// A quantity of one SKU.
public struct StockLine: Codable, Sendable, Equatable, Hashable {
    public var sku: String
    public var quantity: Int
    public init(sku: String, quantity: Int) {
        self.sku = sku
        self.quantity = quantity
    }
}

/// Reserves every line of an order, or none. The reservation lapses after `ttlSeconds` unless
/// committed. Answered by `StockReserved` or `StockReservationFailed`.
public struct ReserveStock: Command, Contract, Validatable {
    public static let type = "inventory.ReserveStock.v1"
    public static let example = ReserveStock(reservationID: "0190c2d4-9a00-7b20-8c1e-4b7d2f0a1e02",
                                             lines: [StockLine(sku: "MUG-001", quantity: 2)], ttlSeconds: 900)
    public var reservationID: String
    public var lines: [StockLine]
    public var ttlSeconds: Int
    public init(reservationID: String, lines: [StockLine], ttlSeconds: Int) {
        self.reservationID = reservationID
        self.lines = lines
        self.ttlSeconds = ttlSeconds
    }

    public func validate() throws(ValidationFailure) {
        try Validation.identifier(reservationID, "reservationID")
        guard (1...100).contains(lines.count) else { throw ValidationFailure("lines must hold 1 to 100 lines, not \(lines.count)") }
        for (index, line) in lines.enumerated() {
            try Validation.text(line.sku, "lines[\(index)].sku", max: 64)
            guard (1...10_000).contains(line.quantity) else {
                throw ValidationFailure("lines[\(index)].quantity must be 1 to 10000, not \(line.quantity)")
            }
        }
        guard Set(lines.map(\.sku)).count == lines.count else { throw ValidationFailure("lines name a SKU more than once") }
        guard (1...86_400).contains(ttlSeconds) else { throw ValidationFailure("ttlSeconds must be 1 to 86400, not \(ttlSeconds)") }
    }
}

/// The reserved stock leaves the shelf: the order is confirmed.
public struct CommitReservation: Command, Contract, Validatable {
    public static let type = "inventory.CommitReservation.v1"
    public static let example = CommitReservation(reservationID: ReserveStock.example.reservationID)
    public var reservationID: String
    public init(reservationID: String) { self.reservationID = reservationID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(reservationID, "reservationID") }
}

/// Compensation: gives reserved (or committed) stock back. Releasing a reservation that never
/// arrived makes a later `ReserveStock` for it reserve nothing.
public struct ReleaseReservation: Command, Contract, Validatable {
    public static let type = "inventory.ReleaseReservation.v1"
    public static let example = ReleaseReservation(reservationID: ReserveStock.example.reservationID, reason: "payment declined")
    public var reservationID: String
    public var reason: String
    public init(reservationID: String, reason: String) {
        self.reservationID = reservationID
        self.reason = reason
    }
    public func validate() throws(ValidationFailure) { try Validation.identifier(reservationID, "reservationID") }
}

/// Admin: adds (or, negative, removes) stock on hand. Stock on hand never drops below what is
/// reserved.
public struct AdjustStock: Command, Contract, Validatable {
    public static let type = "inventory.AdjustStock.v1"
    public static let example = AdjustStock(sku: "MUG-001", delta: 25, reason: "delivery 2026-11-24")
    public var sku: String
    public var delta: Int
    public var reason: String
    public init(sku: String, delta: Int, reason: String) {
        self.sku = sku
        self.delta = delta
        self.reason = reason
    }
    public func validate() throws(ValidationFailure) {
        try Validation.text(sku, "sku", max: 64)
        guard delta != 0, abs(delta) <= 1_000_000 else { throw ValidationFailure("delta must be non-zero and at most 1000000 either way, not \(delta)") }
    }
}

public struct StockReserved: Event, Contract {
    public static let type = "inventory.StockReserved.v1"
    public static let example = StockReserved(reservationID: ReserveStock.example.reservationID, lines: ReserveStock.example.lines,
                                              expiresAt: "2026-11-24T12:15:00Z")
    public var reservationID: String
    public var lines: [StockLine]
    /// ISO 8601.
    public var expiresAt: String
    public init(reservationID: String, lines: [StockLine], expiresAt: String) {
        self.reservationID = reservationID
        self.lines = lines
        self.expiresAt = expiresAt
    }
}

/// Nothing was reserved. `shortages` names each SKU that lacked stock (empty when the reservation
/// had been released before it arrived).
public struct StockReservationFailed: Event, Contract {
    public struct Shortage: Codable, Sendable, Equatable {
        public var sku: String
        public var requested: Int
        public var available: Int
        public init(sku: String, requested: Int, available: Int) {
            self.sku = sku
            self.requested = requested
            self.available = available
        }
    }
    public static let type = "inventory.StockReservationFailed.v1"
    public static let example = StockReservationFailed(reservationID: ReserveStock.example.reservationID, reason: "out of stock",
                                                       shortages: [Shortage(sku: "MUG-001", requested: 2, available: 1)])
    public var reservationID: String
    public var reason: String
    public var shortages: [Shortage]
    public init(reservationID: String, reason: String, shortages: [Shortage]) {
        self.reservationID = reservationID
        self.reason = reason
        self.shortages = shortages
    }
}

public struct ReservationCommitted: Event, Contract {
    public static let type = "inventory.ReservationCommitted.v1"
    public static let example = ReservationCommitted(reservationID: ReserveStock.example.reservationID)
    public var reservationID: String
    public init(reservationID: String) { self.reservationID = reservationID }
}

/// The reservation could not be committed: it had expired or been released.
public struct ReservationCommitFailed: Event, Contract {
    public static let type = "inventory.ReservationCommitFailed.v1"
    public static let example = ReservationCommitFailed(reservationID: ReserveStock.example.reservationID, reason: "the reservation expired")
    public var reservationID: String
    public var reason: String
    public init(reservationID: String, reason: String) {
        self.reservationID = reservationID
        self.reason = reason
    }
}

public struct ReservationReleased: Event, Contract {
    public static let type = "inventory.ReservationReleased.v1"
    public static let example = ReservationReleased(reservationID: ReserveStock.example.reservationID, reason: "payment declined")
    public var reservationID: String
    public var reason: String
    public init(reservationID: String, reason: String) {
        self.reservationID = reservationID
        self.reason = reason
    }
}

public struct StockAdjusted: Event, Contract {
    public static let type = "inventory.StockAdjusted.v1"
    public static let example = StockAdjusted(sku: "MUG-001", onHand: 25, available: 23)
    public var sku: String
    public var onHand: Int
    public var available: Int
    public init(sku: String, onHand: Int, available: Int) {
        self.sku = sku
        self.onHand = onHand
        self.available = available
    }
}

/// A SKU ran out (`available` 0) or came back, through reservations; adjustments say it in
/// `StockAdjusted`.
public struct StockAvailabilityChanged: Event, Contract {
    public static let type = "inventory.StockAvailabilityChanged.v1"
    public static let example = StockAvailabilityChanged(sku: "MUG-001", available: 0)
    public var sku: String
    public var available: Int
    public init(sku: String, available: Int) {
        self.sku = sku
        self.available = available
    }
}

/// Stock per SKU: on hand, reserved, available. SKUs the inventory does not know are left out.
public struct GetStock: Query, Contract {
    public struct Level: Codable, Sendable, Equatable {
        public var sku: String
        public var onHand: Int
        public var reserved: Int
        public var available: Int
        public init(sku: String, onHand: Int, reserved: Int, available: Int) {
            self.sku = sku
            self.onHand = onHand
            self.reserved = reserved
            self.available = available
        }
    }
    public typealias Reply = [Level]
    public static let type = "inventory.GetStock.v1"
    public static let example = GetStock(skus: ["MUG-001"])
    public var skus: [String]
    public init(skus: [String]) { self.skus = skus }
}
