public import FoundationEssentials
import Messaging

// The parts of Stripe's API the payments worker uses, shared by the client and the sandbox.
// JSON fields are snake_case on the wire.

public struct PaymentIntent: Codable, Sendable, Equatable {
    public var id: String
    public var object: String = "payment_intent"
    public var amount: Int
    public var amountCapturable: Int
    public var amountReceived: Int
    public var currency: String
    /// `requires_capture` (authorized), `succeeded` (captured), `canceled`, `requires_payment_method` (declined).
    public var status: String
    public var captureMethod: String
    public var paymentMethod: String?
    public var created: Int
    public var metadata: [String: String]
    public var lastPaymentError: StripeError?

    public init(id: String, amount: Int, amountCapturable: Int, amountReceived: Int, currency: String, status: String,
                captureMethod: String, paymentMethod: String?, created: Int, metadata: [String: String] = [:],
                lastPaymentError: StripeError? = nil) {
        self.id = id
        self.amount = amount
        self.amountCapturable = amountCapturable
        self.amountReceived = amountReceived
        self.currency = currency
        self.status = status
        self.captureMethod = captureMethod
        self.paymentMethod = paymentMethod
        self.created = created
        self.metadata = metadata
        self.lastPaymentError = lastPaymentError
    }
}

public struct Refund: Codable, Sendable, Equatable {
    public var id: String
    public var object: String = "refund"
    public var amount: Int
    public var currency: String
    public var paymentIntent: String
    public var status: String
    public init(id: String, amount: Int, currency: String, paymentIntent: String, status: String) {
        self.id = id
        self.amount = amount
        self.currency = currency
        self.paymentIntent = paymentIntent
        self.status = status
    }
}

/// Stripe's error object: `type` is `card_error`, `invalid_request_error`, `idempotency_error`,
/// `api_error`; a decline has `code` `card_declined` and a `decline_code`.
public struct StripeError: Codable, Sendable, Equatable, Error {
    public var type: String
    public var code: String?
    public var declineCode: String?
    public var message: String
    public var param: String?
    public init(type: String, code: String? = nil, declineCode: String? = nil, message: String, param: String? = nil) {
        self.type = type
        self.code = code
        self.declineCode = declineCode
        self.message = message
        self.param = param
    }
}

public struct StripeErrorBody: Codable, Sendable {
    public var error: StripeError
    public init(error: StripeError) { self.error = error }
}

public enum StripeJSON {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}

/// `application/x-www-form-urlencoded`, as Stripe takes its parameters.
public enum FormEncoding {
    public static func encode(_ fields: [(String, String)]) -> String {
        fields.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }

    public static func decode(_ text: String) -> [(String, String)] {
        text.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (unescape(parts[0]), parts.count > 1 ? unescape(parts[1]) : "")
        }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"), UInt8(ascii: "["), UInt8(ascii: "]"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    static func unescape(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), utf8.count >= 2,
                      let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
