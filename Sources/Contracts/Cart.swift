public import Messaging

// Cart requests change the cart and answer with it (request/reply). Each is idempotent: setting a
// quantity (not adding), removing, clearing; a merge empties the cart it merges from.

public struct CartLine: Codable, Sendable, Equatable {
    public var productID: String
    public var quantity: Int
    public init(productID: String, quantity: Int) {
        self.productID = productID
        self.quantity = quantity
    }
}

public struct Cart: Codable, Sendable, Equatable {
    public static let maximumLines = PlaceOrder.maximumLines
    public static let maximumQuantity = PlaceOrder.maximumQuantity
    public var cartID: String
    /// Sorted by product id.
    public var lines: [CartLine]
    public init(cartID: String, lines: [CartLine]) {
        self.cartID = cartID
        self.lines = lines
    }

    /// The cart of a signed-in customer.
    public static func id(customer: String) -> String { "customer-\(customer)" }
}

public struct GetCart: Query, Contract, Validatable {
    public typealias Reply = Cart
    public static let type = "cart.GetCart.v1"
    public static let example = GetCart(cartID: "customer-cus_0190c2d4")
    public var cartID: String
    public init(cartID: String) { self.cartID = cartID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(cartID, "cartID") }
}

/// Sets a product's quantity in the cart (not adds to it).
public struct SetCartLine: Query, Contract, Validatable {
    public typealias Reply = Cart
    public static let type = "cart.SetCartLine.v1"
    public static let example = SetCartLine(cartID: "customer-cus_0190c2d4", productID: "0190c2d4-8f5e-7a10-9c1e-4b7d2f0a1e01", quantity: 2)
    public var cartID: String
    public var productID: String
    public var quantity: Int
    public init(cartID: String, productID: String, quantity: Int) {
        self.cartID = cartID
        self.productID = productID
        self.quantity = quantity
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(cartID, "cartID")
        try Validation.identifier(productID, "productID")
        guard (1...Cart.maximumQuantity).contains(quantity) else {
            throw ValidationFailure("quantity must be 1 to \(Cart.maximumQuantity), not \(quantity)")
        }
    }
}

public struct RemoveCartLine: Query, Contract, Validatable {
    public typealias Reply = Cart
    public static let type = "cart.RemoveCartLine.v1"
    public static let example = RemoveCartLine(cartID: "customer-cus_0190c2d4", productID: "0190c2d4-8f5e-7a10-9c1e-4b7d2f0a1e01")
    public var cartID: String
    public var productID: String
    public init(cartID: String, productID: String) {
        self.cartID = cartID
        self.productID = productID
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(cartID, "cartID")
        try Validation.identifier(productID, "productID")
    }
}

public struct ClearCart: Query, Contract, Validatable {
    public typealias Reply = Cart
    public static let type = "cart.ClearCart.v1"
    public static let example = ClearCart(cartID: "customer-cus_0190c2d4")
    public var cartID: String
    public init(cartID: String) { self.cartID = cartID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(cartID, "cartID") }
}

/// Moves an anonymous cart into the customer's at login: quantities add up (to the maximum), the
/// anonymous cart is emptied.
public struct MergeCarts: Query, Contract, Validatable {
    public typealias Reply = Cart
    public static let type = "cart.MergeCarts.v1"
    public static let example = MergeCarts(fromCartID: "anon-0190c2d4", intoCartID: "customer-cus_0190c2d4")
    public var fromCartID: String
    public var intoCartID: String
    public init(fromCartID: String, intoCartID: String) {
        self.fromCartID = fromCartID
        self.intoCartID = intoCartID
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(fromCartID, "fromCartID")
        try Validation.identifier(intoCartID, "intoCartID")
        guard fromCartID != intoCartID else { throw ValidationFailure("a cart cannot be merged into itself") }
    }
}

/// Turns the cart into a `PlaceOrder` with this order id. The cart is kept until the order is
/// confirmed (then what it bought is taken out), so a declined order leaves it as it was.
public struct CheckoutCart: Query, Contract, Validatable {
    public struct Reply: Codable, Sendable, Equatable {
        public var orderID: String
        public var lines: [CartLine]
        public init(orderID: String, lines: [CartLine]) {
            self.orderID = orderID
            self.lines = lines
        }
    }
    public static let type = "cart.CheckoutCart.v1"
    public static let example = CheckoutCart(cartID: "customer-cus_0190c2d4", orderID: PlaceOrder.example.orderID,
                                             customerID: PlaceOrder.example.customerID, customerEmail: PlaceOrder.example.customerEmail,
                                             paymentMethod: "pm_card_visa", shippingAddress: Address.example)
    public var cartID: String
    public var orderID: String
    public var customerID: String
    public var customerEmail: String
    public var paymentMethod: String
    public var shippingAddress: Address
    public init(cartID: String, orderID: String, customerID: String, customerEmail: String, paymentMethod: String, shippingAddress: Address) {
        self.cartID = cartID
        self.orderID = orderID
        self.customerID = customerID
        self.customerEmail = customerEmail
        self.paymentMethod = paymentMethod
        self.shippingAddress = shippingAddress
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(cartID, "cartID")
        // The order it makes is checked (its lines come from the cart) before anything is sent.
        try PlaceOrder.validateOrder(orderID: orderID, customerID: customerID, customerEmail: customerEmail,
                                     paymentMethod: paymentMethod, shippingAddress: shippingAddress)
    }
}
