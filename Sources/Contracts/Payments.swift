public import Messaging

// Payments act for one order at a time: every command and event names the order, and the gateway
// sees an idempotency key made of the order's saga id and the step, so a retried command never
// charges twice.

/// Authorizes (holds) the order's amount on the customer's payment method, to capture later.
/// `paymentMethod` is a gateway token such as `pm_card_visa`, never a card number.
public struct AuthorizePayment: Command, Contract, Validatable {
    public static let type = "payments.AuthorizePayment.v1"
    public static let example = AuthorizePayment(orderID: "0190c2d4-9a00-7b20-8c1e-4b7d2f0a1e02", amount: Money(amount: 2500, currency: "EUR"),
                                                 paymentMethod: "pm_card_visa")
    public var orderID: String
    public var amount: Money
    public var paymentMethod: String
    public init(orderID: String, amount: Money, paymentMethod: String) {
        self.orderID = orderID
        self.amount = amount
        self.paymentMethod = paymentMethod
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(orderID, "orderID")
        try amount.validate("amount")
        guard amount.amount > 0 else { throw ValidationFailure("amount must be positive") }
        try Validation.identifier(paymentMethod, "paymentMethod")
    }
}

/// Takes the authorized amount.
public struct CapturePayment: Command, Contract, Validatable {
    public static let type = "payments.CapturePayment.v1"
    public static let example = CapturePayment(orderID: AuthorizePayment.example.orderID)
    public var orderID: String
    public init(orderID: String) { self.orderID = orderID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(orderID, "orderID") }
}

/// Compensation: cancels an authorization (nothing was taken). `amount` and `paymentMethod`
/// repeat what the authorization asked for: when its outcome is unknown (it timed out), payments
/// replays it under the same idempotency key to learn whether the gateway authorized it, and voids
/// that. A void that arrives before its authorization makes the authorization do nothing.
public struct VoidPayment: Command, Contract, Validatable {
    public static let type = "payments.VoidPayment.v1"
    public static let example = VoidPayment(orderID: AuthorizePayment.example.orderID, reason: "out of stock",
                                            amount: AuthorizePayment.example.amount, paymentMethod: "pm_card_visa")
    public var orderID: String
    public var reason: String
    public var amount: Money?
    public var paymentMethod: String?
    public init(orderID: String, reason: String, amount: Money? = nil, paymentMethod: String? = nil) {
        self.orderID = orderID
        self.reason = reason
        self.amount = amount
        self.paymentMethod = paymentMethod
    }
    public func validate() throws(ValidationFailure) { try Validation.identifier(orderID, "orderID") }
}

/// Gives a captured amount back.
public struct RefundPayment: Command, Contract, Validatable {
    public static let type = "payments.RefundPayment.v1"
    public static let example = RefundPayment(orderID: AuthorizePayment.example.orderID, reason: "returned")
    public var orderID: String
    public var reason: String
    public init(orderID: String, reason: String) {
        self.orderID = orderID
        self.reason = reason
    }
    public func validate() throws(ValidationFailure) { try Validation.identifier(orderID, "orderID") }
}

public struct PaymentAuthorized: Event, Contract {
    public static let type = "payments.PaymentAuthorized.v1"
    public static let example = PaymentAuthorized(orderID: AuthorizePayment.example.orderID, paymentIntentID: "pi_3Q0example",
                                                  amount: AuthorizePayment.example.amount)
    public var orderID: String
    public var paymentIntentID: String
    public var amount: Money
    public init(orderID: String, paymentIntentID: String, amount: Money) {
        self.orderID = orderID
        self.paymentIntentID = paymentIntentID
        self.amount = amount
    }
}

/// The gateway refused the payment; `code` and `declineCode` are the gateway's (`card_declined`,
/// `insufficient_funds`), `message` its words for a person.
public struct PaymentDeclined: Event, Contract {
    public static let type = "payments.PaymentDeclined.v1"
    public static let example = PaymentDeclined(orderID: AuthorizePayment.example.orderID, code: "card_declined",
                                                declineCode: "insufficient_funds", message: "Your card has insufficient funds.")
    public var orderID: String
    public var code: String
    public var declineCode: String
    public var message: String
    public init(orderID: String, code: String, declineCode: String, message: String) {
        self.orderID = orderID
        self.code = code
        self.declineCode = declineCode
        self.message = message
    }
}

public struct PaymentCaptured: Event, Contract {
    public static let type = "payments.PaymentCaptured.v1"
    public static let example = PaymentCaptured(orderID: AuthorizePayment.example.orderID, paymentIntentID: "pi_3Q0example",
                                                amount: AuthorizePayment.example.amount)
    public var orderID: String
    public var paymentIntentID: String
    public var amount: Money
    public init(orderID: String, paymentIntentID: String, amount: Money) {
        self.orderID = orderID
        self.paymentIntentID = paymentIntentID
        self.amount = amount
    }
}

/// The authorization is cancelled, or there never was one and there will be none.
public struct PaymentVoided: Event, Contract {
    public static let type = "payments.PaymentVoided.v1"
    public static let example = PaymentVoided(orderID: AuthorizePayment.example.orderID, hadAuthorization: true)
    public var orderID: String
    /// False when the void came before any authorization.
    public var hadAuthorization: Bool
    public init(orderID: String, hadAuthorization: Bool) {
        self.orderID = orderID
        self.hadAuthorization = hadAuthorization
    }
}

public struct PaymentRefunded: Event, Contract {
    public static let type = "payments.PaymentRefunded.v1"
    public static let example = PaymentRefunded(orderID: AuthorizePayment.example.orderID, refundID: "re_3Q0example",
                                                amount: AuthorizePayment.example.amount)
    public var orderID: String
    public var refundID: String
    public var amount: Money
    public init(orderID: String, refundID: String, amount: Money) {
        self.orderID = orderID
        self.refundID = refundID
        self.amount = amount
    }
}

/// A payment operation failed for a reason other than a decline, after the gateway retries
/// (`operation`: authorize, capture, void or refund).
public struct PaymentOperationFailed: Event, Contract {
    public static let type = "payments.PaymentOperationFailed.v1"
    public static let example = PaymentOperationFailed(orderID: AuthorizePayment.example.orderID, operation: "capture",
                                                       reason: "the authorization has expired")
    public var orderID: String
    public var operation: String
    public var reason: String
    public init(orderID: String, operation: String, reason: String) {
        self.orderID = orderID
        self.operation = operation
        self.reason = reason
    }
}
