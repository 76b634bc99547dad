public import Messaging

/// Full-text product search over the read model the search worker keeps from catalog and
/// inventory events. Words are matched by meaning (stems, weighted: name over description) and by
/// spelling (trigram similarity), so a misspelt word still finds its product.
public struct SearchProducts: Query, Contract, Validatable {
    public enum Sort: String, Codable, Sendable, CaseIterable {
        case relevance
        case priceAscending = "price_asc"
        case priceDescending = "price_desc"
        case name
    }

    public struct Hit: Codable, Sendable, Equatable {
        public var product: Product
        public var inStock: Bool
        /// How well it matched (0 without words to match); higher is better.
        public var score: Double
        public init(product: Product, inStock: Bool, score: Double) {
            self.product = product
            self.inStock = inStock
            self.score = score
        }
    }

    public struct Reply: Codable, Sendable, Equatable {
        public var hits: [Hit]
        /// Pass as `cursor` for the next page; nil on the last.
        public var nextCursor: String?
        public init(hits: [Hit], nextCursor: String?) {
            self.hits = hits
            self.nextCursor = nextCursor
        }
    }

    public static let type = "search.SearchProducts.v1"
    public static let maximumLimit = 100
    public static let example = SearchProducts(text: "enamel mug", category: "kitchen", minimumPrice: 100, maximumPrice: 5000,
                                               inStockOnly: true, sort: .relevance, limit: 20, cursor: "eyJpZCI6InAxIn0")
    public var text: String?
    public var category: String?
    /// Minor units, inclusive.
    public var minimumPrice: Int?
    public var maximumPrice: Int?
    public var inStockOnly: Bool?
    public var sort: Sort?
    public var limit: Int?
    public var cursor: String?

    public init(text: String? = nil, category: String? = nil, minimumPrice: Int? = nil, maximumPrice: Int? = nil,
                inStockOnly: Bool? = nil, sort: Sort? = nil, limit: Int? = nil, cursor: String? = nil) {
        self.text = text
        self.category = category
        self.minimumPrice = minimumPrice
        self.maximumPrice = maximumPrice
        self.inStockOnly = inStockOnly
        self.sort = sort
        self.limit = limit
        self.cursor = cursor
    }

    public func validate() throws(ValidationFailure) {
        if let text, text.count > 200 { throw ValidationFailure("text is longer than 200 characters") }
        if let limit, !(1...Self.maximumLimit).contains(limit) {
            throw ValidationFailure("limit must be 1 to \(Self.maximumLimit), not \(limit)")
        }
        if let minimumPrice, minimumPrice < 0 { throw ValidationFailure("minimumPrice must not be negative") }
        if let maximumPrice, maximumPrice < 0 { throw ValidationFailure("maximumPrice must not be negative") }
        if let minimumPrice, let maximumPrice, minimumPrice > maximumPrice {
            throw ValidationFailure("minimumPrice (\(minimumPrice)) is above maximumPrice (\(maximumPrice))")
        }
        if let cursor, cursor.count > 500 { throw ValidationFailure("cursor is not one this service gave") }
    }
}
