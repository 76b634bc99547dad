/// The shop a chaos run sells from, and what each order asks for: decided from the seed and the
/// order's number alone, so that a seed names the same orders on every run.
public struct ShopperMix: Sendable, Equatable {
    public struct Product: Sendable, Equatable, Codable {
        public var id: String
        public var sku: String
        public var price: Int
        public var stock: Int
    }

    public enum Card: String, Sendable, Codable, CaseIterable {
        case good = "pm_card_visa"
        case declined = "pm_card_chargeDeclined"
        case insufficientFunds = "pm_card_chargeDeclinedInsufficientFunds"
    }

    /// What one order asks for and what should become of it.
    public struct Order: Sendable, Equatable, Codable {
        public var number: Int
        /// Product id → quantity.
        public var lines: [Line]
        public var card: Card
        /// The customer asks to cancel it as soon as it is accepted.
        public var cancels: Bool
        /// Whether a line is of a product that runs out during the run.
        public var scarce: Bool

        public struct Line: Sendable, Equatable, Codable {
            public var productID: String
            public var quantity: Int
            public init(productID: String, quantity: Int) {
                self.productID = productID
                self.quantity = quantity
            }
        }

        public init(number: Int, lines: [Line], card: Card, cancels: Bool, scarce: Bool) {
            self.number = number
            self.lines = lines
            self.card = card
            self.cancels = cancels
            self.scarce = scarce
        }

        /// Nothing in it may legitimately stop it: it must complete.
        public var mustComplete: Bool { card == .good && !cancels && !scarce }
        /// The `Idempotency-Key` its customer sends with every try.
        public func idempotencyKey(seed: UInt64) -> String { "chaos-\(seed)-\(number)" }
    }

    /// Plenty of stock: these never run out.
    public let plenty: [Product]
    /// A few units each: orders for them run out, and are cancelled for it.
    public let scarce: [Product]
    public let seed: UInt64

    public init(seed: UInt64, plenty: Int = 40, scarce: Int = 5, scarceStock: Int = 4) {
        self.seed = seed
        self.plenty = (1...plenty).map { n in
            Product(id: "chaos-p\(n)", sku: "CHAOS-P\(n)", price: 500 + 37 * n, stock: 1_000_000)
        }
        self.scarce = (1...scarce).map { n in
            Product(id: "chaos-s\(n)", sku: "CHAOS-S\(n)", price: 9_900 + n, stock: scarceStock)
        }
    }

    public var products: [Product] { plenty + scarce }

    /// Order number `number` (from 0): one or two lines, one in ten for a scarce product; a good
    /// card mostly, declined one time in ten, short of funds one in twenty; cancelled by its
    /// customer one time in twenty.
    public func order(_ number: Int) -> Order {
        var random = SeededGenerator.stream(seed, 1_000 + UInt64(number))
        var lines: [Order.Line] = []
        var scarceLine = false
        for _ in 0..<random.integer(1...2) {
            let product: Product
            if random.unit() < 0.1 {
                product = random.pick(scarce)
                scarceLine = true
            } else {
                product = random.pick(plenty)
            }
            let quantity = random.integer(1...2)
            if !lines.contains(where: { $0.productID == product.id }) {
                lines.append(Order.Line(productID: product.id, quantity: quantity))
            }
        }
        let roll = random.unit()
        let card: Card = roll < 0.85 ? .good : roll < 0.95 ? .declined : .insufficientFunds
        let cancels = random.unit() < 0.05
        return Order(number: number, lines: lines, card: card, cancels: cancels, scarce: scarceLine)
    }
}
