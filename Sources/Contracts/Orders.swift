public import Messaging

public struct Address: Codable, Sendable, Equatable {
    public var name: String
    public var line1: String
    public var line2: String?
    public var postalCode: String
    public var city: String
    /// ISO 3166-1 alpha-2.
    public var country: String
    public init(name: String, line1: String, line2: String? = nil, postalCode: String, city: String, country: String) {
        self.name = name
        self.line1 = line1
        self.line2 = line2
        self.postalCode = postalCode
        self.city = city
        self.country = country
    }

    public static let example = Address(name: "Ada Lovelace", line1: "12 St James's Square", line2: "Flat 2", postalCode: "SW1Y 4JH",
                                 city: "London", country: "GB")

    func validate() throws(ValidationFailure) {
        try Validation.text(name, "shippingAddress.name", max: 200)
        try Validation.text(line1, "shippingAddress.line1", max: 200)
        if let line2, line2.count > 200 { throw ValidationFailure("shippingAddress.line2 is longer than 200 characters") }
        try Validation.text(postalCode, "shippingAddress.postalCode", max: 20)
        try Validation.text(city, "shippingAddress.city", max: 100)
        guard country.count == 2, country.allSatisfy({ $0.isASCII && $0.isUppercase }) else {
            throw ValidationFailure("shippingAddress.country must be two upper-case letters (ISO 3166-1), not '\(country)'")
        }
    }
}

/// One line of an order as the customer asks for it: a product and how many. The price comes
/// from the catalog.
public struct OrderLineRequest: Codable, Sendable, Equatable {
    public var productID: String
    public var quantity: Int
    public init(productID: String, quantity: Int) {
        self.productID = productID
        self.quantity = quantity
    }
}

/// Places an order. `orderID` is chosen by the sender (the edge derives it from the request's
/// idempotency key), so placing the same order twice makes one order.
public struct PlaceOrder: Command, Contract, Validatable {
    public static let type = "orders.PlaceOrder.v1"
    public static let maximumLines = 50
    public static let maximumQuantity = 99
    public static let example = PlaceOrder(orderID: "0190c2d4-9a00-7b20-8c1e-4b7d2f0a1e02", customerID: "cus_0190c2d4",
                                           customerEmail: "ada@example.com",
                                           lines: [OrderLineRequest(productID: Product.example.id, quantity: 2)],
                                           paymentMethod: "pm_card_visa", shippingAddress: .example)
    public var orderID: String
    public var customerID: String
    public var customerEmail: String
    public var lines: [OrderLineRequest]
    public var paymentMethod: String
    public var shippingAddress: Address

    public init(orderID: String, customerID: String, customerEmail: String, lines: [OrderLineRequest], paymentMethod: String,
                shippingAddress: Address) {
        self.orderID = orderID
        self.customerID = customerID
        self.customerEmail = customerEmail
        self.lines = lines
        self.paymentMethod = paymentMethod
        self.shippingAddress = shippingAddress
    }

    public func validate() throws(ValidationFailure) {
        try Self.validateOrder(orderID: orderID, customerID: customerID, customerEmail: customerEmail, paymentMethod: paymentMethod,
                               shippingAddress: shippingAddress)
        guard (1...Self.maximumLines).contains(lines.count) else {
            throw ValidationFailure("lines must hold 1 to \(Self.maximumLines) lines, not \(lines.count)")
        }
        for (index, line) in lines.enumerated() {
            try Validation.identifier(line.productID, "lines[\(index)].productID")
            guard (1...Self.maximumQuantity).contains(line.quantity) else {
                throw ValidationFailure("lines[\(index)].quantity must be 1 to \(Self.maximumQuantity), not \(line.quantity)")
            }
        }
        guard Set(lines.map(\.productID)).count == lines.count else { throw ValidationFailure("lines name a product more than once") }
    }

    /// Everything about an order but its lines (a cart checkout has its lines in the cart).
    static func validateOrder(orderID: String, customerID: String, customerEmail: String, paymentMethod: String,
                              shippingAddress: Address) throws(ValidationFailure) {
        try Validation.identifier(orderID, "orderID")
        try Validation.identifier(customerID, "customerID")
        try Validation.email(customerEmail, "customerEmail")
        try Validation.identifier(paymentMethod, "paymentMethod")
        try shippingAddress.validate()
    }
}

/// Cancels an order before its payment is captured. With a `customerID`, only that customer's
/// order; without, an operator's cancel (`shopfleet saga cancel`).
public struct CancelOrder: Command, Contract, Validatable {
    public static let type = "orders.CancelOrder.v1"
    public static let example = CancelOrder(orderID: PlaceOrder.example.orderID, customerID: PlaceOrder.example.customerID,
                                            reason: "changed my mind", requestedBy: "cus_0190c2d4")
    public var orderID: String
    public var customerID: String?
    public var reason: String
    /// An operator's cancel: who asked (kept in the saga's step log).
    public var requestedBy: String?
    public init(orderID: String, customerID: String?, reason: String, requestedBy: String? = nil) {
        self.orderID = orderID
        self.customerID = customerID
        self.reason = reason
        self.requestedBy = requestedBy
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(orderID, "orderID")
        if let customerID { try Validation.identifier(customerID, "customerID") }
        guard reason.count <= 500 else { throw ValidationFailure("reason is longer than 500 characters") }
        guard (requestedBy?.count ?? 0) <= 200 else { throw ValidationFailure("requestedBy is longer than 200 characters") }
    }
}

/// Operator: sends the saga's current step again (`shopfleet saga retry`, the console). `reason`
/// and `requestedBy` are kept in the saga's step log.
public struct RetryOrderSaga: Command, Contract, Validatable {
    public static let type = "orders.RetryOrderSaga.v1"
    public static let example = RetryOrderSaga(orderID: PlaceOrder.example.orderID, reason: "the gateway is back", requestedBy: "cus_0190c2d4")
    public var orderID: String
    public var reason: String?
    public var requestedBy: String?
    public init(orderID: String, reason: String? = nil, requestedBy: String? = nil) {
        self.orderID = orderID
        self.reason = reason
        self.requestedBy = requestedBy
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(orderID, "orderID")
        guard (reason?.count ?? 0) <= 500 else { throw ValidationFailure("reason is longer than 500 characters") }
        guard (requestedBy?.count ?? 0) <= 200 else { throw ValidationFailure("requestedBy is longer than 200 characters") }
    }
}

/// A priced order line.
public struct OrderLine: Codable, Sendable, Equatable {
    public var productID: String
    public var sku: String
    public var name: String
    public var quantity: Int
    public var unitPrice: Money
    public init(productID: String, sku: String, name: String, quantity: Int, unitPrice: Money) {
        self.productID = productID
        self.sku = sku
        self.name = name
        self.quantity = quantity
        self.unitPrice = unitPrice
    }
    static let example = OrderLine(productID: Product.example.id, sku: Product.example.sku, name: Product.example.name, quantity: 2,
                                   unitPrice: Product.example.price)
}

/// What a customer sees of an order. `status` is one of ``OrderStatus``.
public struct OrderSummary: Codable, Sendable, Equatable {
    public var orderID: String
    public var customerID: String
    public var customerEmail: String
    public var status: String
    /// Why the order was cancelled, or what it waits for.
    public var statusReason: String?
    public var lines: [OrderLine]
    public var total: Money
    /// ISO 8601.
    public var placedAt: String
    public var updatedAt: String
    public init(orderID: String, customerID: String, customerEmail: String, status: String, statusReason: String?, lines: [OrderLine],
                total: Money, placedAt: String, updatedAt: String) {
        self.orderID = orderID
        self.customerID = customerID
        self.customerEmail = customerEmail
        self.status = status
        self.statusReason = statusReason
        self.lines = lines
        self.total = total
        self.placedAt = placedAt
        self.updatedAt = updatedAt
    }
    static let example = OrderSummary(orderID: PlaceOrder.example.orderID, customerID: PlaceOrder.example.customerID,
                                      customerEmail: PlaceOrder.example.customerEmail, status: OrderStatus.cancelled.rawValue,
                                      statusReason: "payment declined", lines: [.example], total: Money(amount: 2500, currency: "EUR"),
                                      placedAt: "2026-11-24T12:00:00Z", updatedAt: "2026-11-24T12:00:02Z")
}

/// The order states a customer sees. The saga has more; each maps to one of these.
public enum OrderStatus: String, Codable, Sendable, CaseIterable {
    /// Accepted; stock and payment are being arranged.
    case pending
    /// Stock is committed and payment authorized; capture follows.
    case confirmed
    /// Paid. Nothing left to do but ship.
    case completed
    /// Being undone (a payment voided, stock released); ends in `cancelled`.
    case cancelling
    /// Nothing was charged; `statusReason` says why.
    case cancelled
}

public struct OrderPlaced: Event, Contract {
    public static let type = "orders.OrderPlaced.v1"
    public static let example = OrderPlaced(order: .example)
    public var order: OrderSummary
    public init(order: OrderSummary) { self.order = order }
}

public struct OrderConfirmed: Event, Contract {
    public static let type = "orders.OrderConfirmed.v1"
    public static let example = OrderConfirmed(order: .example)
    public var order: OrderSummary
    public init(order: OrderSummary) { self.order = order }
}

public struct OrderCompleted: Event, Contract {
    public static let type = "orders.OrderCompleted.v1"
    public static let example = OrderCompleted(order: .example)
    public var order: OrderSummary
    public init(order: OrderSummary) { self.order = order }
}

/// The order will not go ahead; `reason` says why (out of stock, payment declined, cancelled by the
/// customer, payment timed out).
public struct OrderCancelled: Event, Contract {
    public static let type = "orders.OrderCancelled.v1"
    public static let example = OrderCancelled(order: .example, reason: "payment declined")
    public var order: OrderSummary
    public var reason: String
    public init(order: OrderSummary, reason: String) {
        self.order = order
        self.reason = reason
    }
}

/// A cancel came too late (the payment was being captured) or named another customer's order.
public struct OrderCancellationRejected: Event, Contract {
    public static let type = "orders.OrderCancellationRejected.v1"
    public static let example = OrderCancellationRejected(orderID: PlaceOrder.example.orderID, reason: "the payment is already being captured")
    public var orderID: String
    public var reason: String
    public init(orderID: String, reason: String) {
        self.orderID = orderID
        self.reason = reason
    }
}

/// One order; nil when there is none, or when `customerID` is given and the order is another's.
public struct GetOrder: Query, Contract {
    public typealias Reply = OrderSummary?
    public static let type = "orders.GetOrder.v1"
    public static let example = GetOrder(orderID: PlaceOrder.example.orderID, customerID: PlaceOrder.example.customerID)
    public var orderID: String
    public var customerID: String?
    public init(orderID: String, customerID: String?) {
        self.orderID = orderID
        self.customerID = customerID
    }
}

/// A customer's orders, newest first; `before` (an order id) pages back.
public struct ListCustomerOrders: Query, Contract {
    public typealias Reply = [OrderSummary]
    public static let type = "orders.ListCustomerOrders.v1"
    public static let example = ListCustomerOrders(customerID: PlaceOrder.example.customerID, limit: 20, before: PlaceOrder.example.orderID)
    public var customerID: String
    public var limit: Int
    public var before: String?
    public init(customerID: String, limit: Int = 20, before: String? = nil) {
        self.customerID = customerID
        self.limit = limit
        self.before = before
    }
}
