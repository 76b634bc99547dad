public import AsyncHTTPClient
public import ClientRuntime
public import FoundationEssentials
import NIOCore
import NIOHTTP1

/// A client for a Stripe-compatible gateway: PaymentIntents with manual capture, capture, cancel
/// (void), refunds. Every call carries an `Idempotency-Key`; connection failures, timeouts, 5xx
/// and 409 (a request with that key still in flight) are retried with the same key, so a retry
/// never charges twice.
public struct PaymentGateway: Sendable {
    public struct Configuration: Sendable {
        /// Without a trailing slash: `https://api.stripe.com` or the sandbox's address.
        public var baseURL: String
        /// The secret key, sent as a bearer token. Never logged.
        public var apiKey: String
        public var timeout: Duration = .seconds(10)
        public var attempts: Int = 3
        /// Between attempts.
        public var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(2))
        public init(baseURL: String, apiKey: String) {
            var base = baseURL
            while base.hasSuffix("/") { base.removeLast() }
            self.baseURL = base
            self.apiKey = apiKey
        }
    }

    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// The card was declined: no retry will change that.
        case declined(code: String, declineCode: String, message: String)
        /// The gateway refused the request (4xx): a bug or a state the payment is not in.
        case rejected(status: Int, type: String, message: String)
        /// No answer that counts after every attempt: try again later.
        case unavailable(String)

        public var description: String {
            switch self {
            case .declined(let code, let declineCode, let message): return "declined (\(code), \(declineCode)): \(message)"
            case .rejected(let status, let type, let message): return "the gateway refused the request (\(status) \(type)): \(message)"
            case .unavailable(let message): return "the gateway is unavailable: \(message)"
            }
        }
    }

    public let configuration: Configuration
    private let client: HTTPClient

    public init(configuration: Configuration, client: HTTPClient = .shared) {
        self.configuration = configuration
        self.client = client
    }

    /// Creates and confirms a PaymentIntent with manual capture: the amount is held, not taken.
    public func authorize(amount: Int, currency: String, paymentMethod: String, orderID: String,
                          idempotencyKey: String) async throws -> PaymentIntent {
        try await post("/v1/payment_intents", [
            ("amount", String(amount)), ("currency", currency.lowercased()), ("payment_method", paymentMethod),
            ("capture_method", "manual"), ("confirm", "true"), ("metadata[order_id]", orderID),
        ], idempotencyKey: idempotencyKey)
    }

    public func capture(_ intentID: String, idempotencyKey: String) async throws -> PaymentIntent {
        try await post("/v1/payment_intents/\(intentID)/capture", [], idempotencyKey: idempotencyKey)
    }

    public func cancel(_ intentID: String, idempotencyKey: String) async throws -> PaymentIntent {
        try await post("/v1/payment_intents/\(intentID)/cancel", [], idempotencyKey: idempotencyKey)
    }

    public func refund(_ intentID: String, idempotencyKey: String) async throws -> Refund {
        try await post("/v1/refunds", [("payment_intent", intentID)], idempotencyKey: idempotencyKey)
    }

    private func post<T: Decodable>(_ path: String, _ form: [(String, String)], idempotencyKey: String) async throws -> T {
        var backoff = configuration.backoff
        var lastProblem = ""
        for attempt in 1...max(1, configuration.attempts) {
            if attempt > 1 { try await Task.sleep(for: backoff.next()) }
            var request = HTTPClientRequest(url: configuration.baseURL + path)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(configuration.apiKey)")
            request.headers.add(name: "Idempotency-Key", value: idempotencyKey)
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
            let status: Int
            let body: Data
            do {
                let response = try await client.execute(request, timeout: .nanoseconds(Int64(configuration.timeout.components.seconds) * 1_000_000_000
                                                                                        + configuration.timeout.components.attoseconds / 1_000_000_000))
                status = Int(response.status.code)
                body = Data(try await response.body.collect(upTo: 1 << 20).readableBytesView)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastProblem = "POST \(path) to \(configuration.baseURL): \(error)"
                continue
            }
            if (200..<300).contains(status) {
                do {
                    return try StripeJSON.decoder().decode(T.self, from: body)
                } catch {
                    throw Failure.rejected(status: status, type: "bad_response", message: "POST \(path): the answer is not a \(T.self): \(error)")
                }
            }
            let stripeError = (try? StripeJSON.decoder().decode(StripeErrorBody.self, from: body))?.error
            if status >= 500 || status == 409 || status == 429 {
                lastProblem = "POST \(path) answered \(status): \(stripeError?.message ?? String(decoding: body.prefix(200), as: UTF8.self))"
                continue
            }
            if let stripeError, stripeError.type == "card_error" {
                throw Failure.declined(code: stripeError.code ?? "card_declined", declineCode: stripeError.declineCode ?? "generic_decline",
                                       message: stripeError.message)
            }
            throw Failure.rejected(status: status, type: stripeError?.type ?? "unknown",
                                   message: stripeError?.message ?? String(decoding: body.prefix(500), as: UTF8.self))
        }
        throw Failure.unavailable("\(lastProblem) (after \(configuration.attempts) attempts)")
    }
}
