import Contracts
import FoundationEssentials
import Hummingbird
import Messaging

/// A JSON body the edge takes: decoded strictly — unknown fields, wrong types and missing
/// fields are errors that name the field.
protocol StrictBody: Decodable {
    /// The fields allowed at the top level, and inside each object field.
    static var fields: Set<String> { get }
    static var nested: [String: Set<String>] { get }
}

extension StrictBody {
    static var nested: [String: Set<String>] { [:] }

    static func read(_ request: Request) async throws -> Self {
        let buffer = try await request.body.collect(upTo: EdgeContext.maximumBody)
        let data = Data(buffer.readableBytesView)
        guard !data.isEmpty else { throw Problem.badRequest("the body is empty; it must be a JSON object") }
        guard let object = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            throw Problem.badRequest("the body is not a JSON object")
        }
        let unknown = Set(object.keys).subtracting(fields).sorted()
        guard unknown.isEmpty else { throw Problem.invalid("unknown field\(unknown.count > 1 ? "s" : ""): \(unknown.joined(separator: ", "))") }
        for (field, allowed) in nested {
            guard case .object(let inner)? = object[field] else { continue }
            let extra = Set(inner.keys).subtracting(allowed).sorted()
            guard extra.isEmpty else { throw Problem.invalid("unknown field\(extra.count > 1 ? "s" : "") in \(field): \(extra.joined(separator: ", "))") }
        }
        do {
            return try JSONDecoder().decode(Self.self, from: data)
        } catch let error as DecodingError {
            throw Problem.invalid(error.summary)
        }
    }
}

struct RegisterBody: StrictBody {
    static let fields: Set<String> = ["email", "password", "name"]
    var email: String
    var password: String
    var name: String
}

struct LoginBody: StrictBody {
    static let fields: Set<String> = ["email", "password", "cartId"]
    var email: String
    var password: String
    /// An anonymous cart to merge into the customer's.
    var cartId: String?
}

struct RefreshBody: StrictBody {
    static let fields: Set<String> = ["refreshToken"]
    var refreshToken: String
}

struct CartLineBody: StrictBody {
    static let fields: Set<String> = ["quantity"]
    var quantity: Int
}

struct OrderBody: StrictBody {
    static let fields: Set<String> = ["paymentMethod", "shippingAddress"]
    static let nested: [String: Set<String>] = ["shippingAddress": ["name", "line1", "line2", "postalCode", "city", "country"]]
    var paymentMethod: String
    var shippingAddress: Address
}

struct CancelBody: StrictBody {
    static let fields: Set<String> = ["reason"]
    var reason: String?
}

struct ProductBody: StrictBody {
    static let fields: Set<String> = ["sku", "name", "description", "category", "price", "active"]
    static let nested: [String: Set<String>] = ["price": ["amount", "currency"]]
    var sku: String
    var name: String
    var description: String
    var category: String
    var price: Money
    var active: Bool?
}

struct StockBody: StrictBody {
    static let fields: Set<String> = ["delta", "reason"]
    var delta: Int
    var reason: String
}
