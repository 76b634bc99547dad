public import Messaging

/// An amount of money in minor units (cents) of an ISO 4217 currency, upper case.
public struct Money: Codable, Sendable, Equatable, Hashable, CustomStringConvertible {
    public var amount: Int
    public var currency: String
    public init(amount: Int, currency: String) {
        self.amount = amount
        self.currency = currency
    }
    public var description: String { "\(amount) \(currency) minor units" }

    func validate(_ field: String) throws(ValidationFailure) {
        guard amount >= 0, amount <= 100_000_000_00 else { throw ValidationFailure("\(field).amount must be 0 to 10000000000, not \(amount)") }
        guard currency.count == 3, currency.allSatisfy({ $0.isASCII && $0.isUppercase }) else {
            throw ValidationFailure("\(field).currency must be three upper-case letters (ISO 4217), not '\(currency)'")
        }
    }
}

/// A product as the catalog holds it. Orders take prices from here, never from the client.
///
/// `revision` is the catalog's count of changes to the product, set by the catalog in what it
/// reads and publishes (ignored in ``UpsertProduct``; absent from catalogs before revisions and
/// from search). A copy kept elsewhere applies a product only over an older revision, so changes
/// that arrive out of order cannot bring back an old price.
public struct Product: Codable, Sendable, Equatable {
    public var id: String
    public var sku: String
    public var name: String
    public var description: String
    public var category: String
    public var price: Money
    public var active: Bool
    public var revision: Int?

    public init(id: String, sku: String, name: String, description: String, category: String, price: Money, active: Bool = true,
                revision: Int? = nil) {
        self.id = id
        self.sku = sku
        self.name = name
        self.description = description
        self.category = category
        self.price = price
        self.active = active
        self.revision = revision
    }

    static let example = Product(id: "0190c2d4-8f5e-7a10-9c1e-4b7d2f0a1e01", sku: "MUG-001", name: "Enamel mug",
                                 description: "A blue enamel mug, 350 ml.", category: "kitchen",
                                 price: Money(amount: 1250, currency: "EUR"), revision: 1)
}

/// Admin: creates a product or replaces its fields.
public struct UpsertProduct: Command, Contract, Validatable {
    public static let type = "catalog.UpsertProduct.v1"
    public static let example = UpsertProduct(product: .example)
    public var product: Product
    public init(product: Product) { self.product = product }

    public func validate() throws(ValidationFailure) {
        try Validation.identifier(product.id, "product.id")
        try Validation.text(product.sku, "product.sku", max: 64)
        try Validation.text(product.name, "product.name", max: 200)
        try Validation.text(product.category, "product.category", max: 64)
        guard product.description.count <= 5000 else { throw ValidationFailure("product.description is longer than 5000 characters") }
        try product.price.validate("product.price")
    }
}

/// Admin: takes a product off sale. Orders for it are refused from then on.
public struct DeactivateProduct: Command, Contract, Validatable {
    public static let type = "catalog.DeactivateProduct.v1"
    public static let example = DeactivateProduct(productID: Product.example.id)
    public var productID: String
    public init(productID: String) { self.productID = productID }
    public func validate() throws(ValidationFailure) { try Validation.identifier(productID, "productID") }
}

/// A product was created or changed; its `revision` counts this change.
public struct ProductUpserted: Event, Contract {
    public static let type = "catalog.ProductUpserted.v1"
    public static let example = ProductUpserted(product: .example)
    public var product: Product
    public init(product: Product) { self.product = product }
}

/// A product was taken off sale; `revision` (as in ``Product``) counts this change.
public struct ProductDeactivated: Event, Contract {
    public static let type = "catalog.ProductDeactivated.v1"
    public static let example = ProductDeactivated(productID: Product.example.id, sku: Product.example.sku, revision: 2)
    public var productID: String
    public var sku: String
    public var revision: Int?
    public init(productID: String, sku: String, revision: Int? = nil) {
        self.productID = productID
        self.sku = sku
        self.revision = revision
    }
}

/// One product by id; nil when there is none (inactive products are returned, marked).
public struct GetProduct: Query, Contract {
    public typealias Reply = Product?
    public static let type = "catalog.GetProduct.v1"
    public static let example = GetProduct(productID: Product.example.id)
    public var productID: String
    public init(productID: String) { self.productID = productID }
}

/// Many products by id; ids with no product are left out of the reply.
public struct GetProducts: Query, Contract, Validatable {
    public typealias Reply = [Product]
    public static let type = "catalog.GetProducts.v1"
    public static let example = GetProducts(productIDs: [Product.example.id])
    public var productIDs: [String]
    public init(productIDs: [String]) { self.productIDs = productIDs }
    public func validate() throws(ValidationFailure) {
        guard productIDs.count <= 500 else { throw ValidationFailure("productIDs holds \(productIDs.count) ids; at most 500") }
    }
}

/// Checks shared by the contracts' `validate()`.
enum Validation {
    static func identifier(_ value: String, _ field: String) throws(ValidationFailure) {
        guard !value.isEmpty, value.count <= 64,
              value.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }) else {
            throw ValidationFailure("\(field) must be 1 to 64 letters, digits, '-' or '_', not '\(value.prefix(80))'")
        }
    }

    static func text(_ value: String, _ field: String, max: Int) throws(ValidationFailure) {
        guard !value.trimmingSpaces.isEmpty else { throw ValidationFailure("\(field) must not be empty") }
        guard value.count <= max else { throw ValidationFailure("\(field) is longer than \(max) characters") }
    }
}

extension StringProtocol {
    /// Without leading and trailing whitespace.
    public var trimmingSpaces: SubSequence {
        let start = firstIndex { !$0.isWhitespace } ?? endIndex
        let end = lastIndex { !$0.isWhitespace }.map { index(after: $0) } ?? start
        return self[start..<end]
    }
}
