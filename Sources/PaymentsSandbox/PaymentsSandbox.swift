import FoundationEssentials
import HTTPTypes
public import Hummingbird
public import Logging
import NIOCore
import Payments
import Synchronization

/// A local Stripe-compatible gateway for development and tests: the PaymentIntents and Refunds
/// endpoints the payments worker uses, form-encoded, with Stripe's test cards, idempotency keys
/// honoured the way Stripe does, and faults on demand. State lives in memory.
///
/// Test payment methods: `pm_card_visa` or `pm_card_4242424242424242` succeed;
/// `pm_card_chargeDeclined` or `pm_card_4000000000000002` are declined (`generic_decline`);
/// `pm_card_chargeDeclinedInsufficientFunds` or `pm_card_4000000000009995` are declined
/// (`insufficient_funds`).
public final class PaymentsSandbox: Sendable {
    /// Misbehaviour on demand, set by flags at start and changed at run time through
    /// `POST /_sandbox/faults` (JSON).
    public struct Faults: Codable, Sendable, Equatable {
        /// Added before every API request is handled.
        public var latencyMilliseconds: Int = 0
        /// Share of API requests answered 500 without being handled.
        public var failureRate: Double = 0
        /// Share of API requests handled whose answer is then lost: the connection is dropped.
        public var dropRate: Double = 0
        /// While true, every API request is held before it is handled, until faults are set with
        /// `hold` false: a test can act while a request is certainly inside the gateway
        /// (`Stats.held` counts the requests waiting), whatever the speed of the machine.
        public var hold = false
        /// The next this many API requests are answered 429 (`rate_limit`), as Stripe answers a
        /// client that asks too fast; counted down as they are.
        public var rateLimitNext = 0
        public init() {}

        enum CodingKeys: String, CodingKey { case latencyMilliseconds, failureRate, dropRate, hold, rateLimitNext }

        /// Every field may be left out (it keeps its default).
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            latencyMilliseconds = try c.decodeIfPresent(Int.self, forKey: .latencyMilliseconds) ?? 0
            failureRate = try c.decodeIfPresent(Double.self, forKey: .failureRate) ?? 0
            dropRate = try c.decodeIfPresent(Double.self, forKey: .dropRate) ?? 0
            hold = try c.decodeIfPresent(Bool.self, forKey: .hold) ?? false
            rateLimitNext = try c.decodeIfPresent(Int.self, forKey: .rateLimitNext) ?? 0
        }
    }

    /// What the sandbox has done, for tests (`GET /_sandbox/stats`).
    public struct Stats: Codable, Sendable, Equatable {
        public var requests = 0
        /// Requests held by the `hold` fault right now.
        public var held = 0
        /// Requests answered 409 because another request with their key was still being handled.
        public var conflicts = 0
        /// Requests answered 429 by the `rateLimitNext` fault.
        public var rateLimited = 0
        public var idempotentReplays = 0
        public var injectedFailures = 0
        public var droppedConnections = 0
        /// PaymentIntents created, by status.
        public var intents: [String: Int] = [:]
        public var refunds = 0
        /// Intents per `metadata[order_id]`: more than one would be a double charge.
        public var intentsPerOrder: [String: Int] = [:]
    }

    struct Stored: Sendable {
        var fingerprint: String
        var status: HTTPResponse.Status
        var body: Data
    }

    struct State: Sendable {
        var intents: [String: PaymentIntent] = [:]
        var refunds: [String: Refund] = [:]
        var idempotency: [String: Stored] = [:]
        /// Keys whose first request is still being handled: another request with one gets 409.
        var inProgress: Set<String> = []
        var faults = Faults()
        var stats = Stats()
        /// The requests the `hold` fault holds, resumed when it is lifted.
        var holding: [CheckedContinuation<Void, Never>] = []
    }

    let apiKey: String?
    let state: Mutex<State>
    let logger: Logger

    /// - Parameter apiKey: the secret key callers must present; nil accepts any `sk_test_` key.
    public init(apiKey: String?, faults: Faults = Faults(), logger: Logger) {
        self.apiKey = apiKey
        var initial = State()
        initial.faults = faults
        state = Mutex(initial)
        self.logger = logger
    }

    public func application(host: String = "127.0.0.1", port: Int) -> some ApplicationProtocol {
        let router = Router()
        router.get("healthz") { _, _ in "ok\n" }
        // The sandbox's own endpoints need the secret key too: faults change what every payment
        // does, and the ledger lists every intent.
        router.get("_sandbox/stats") { request, _ in
            if let refused = self.refusal(request) { return refused }
            return self.json(.ok, self.state.withLock { $0.stats })
        }
        router.get("_sandbox/faults") { request, _ in
            if let refused = self.refusal(request) { return refused }
            return self.json(.ok, self.state.withLock { $0.faults })
        }
        // The gateway's ledger: every PaymentIntent, oldest first (what the chaos runner audits).
        router.get("_sandbox/intents") { request, _ in
            if let refused = self.refusal(request) { return refused }
            return self.json(.ok, self.state.withLock { state in state.intents.values.sorted { ($0.created, $0.id) < ($1.created, $1.id) } })
        }
        router.post("_sandbox/faults") { request, _ -> Response in
            if let refused = self.refusal(request) { return refused }
            let body = try await request.body.collect(upTo: 1 << 16)
            guard let faults = try? JSONDecoder().decode(Faults.self, from: Data(body.readableBytesView)) else {
                return self.error(.badRequest, StripeError(type: "invalid_request_error",
                                                           message: "the body must be JSON: {\"latencyMilliseconds\", \"failureRate\", \"dropRate\", \"hold\", \"rateLimitNext\"}, each optional"))
            }
            let released = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.faults = faults
                guard !faults.hold else { return [] }
                defer { state.holding = []; state.stats.held = 0 }
                return state.holding
            }
            for request in released { request.resume() }
            self.logger.info("faults changed", metadata: ["latency_ms": .stringConvertible(faults.latencyMilliseconds),
                                                          "failure_rate": .stringConvertible(faults.failureRate),
                                                          "drop_rate": .stringConvertible(faults.dropRate),
                                                          "hold": .stringConvertible(faults.hold)])
            return self.json(.ok, faults)
        }
        router.post("v1/payment_intents") { request, context in
            try await self.api(request, path: "/v1/payment_intents") { self.createIntent($0) }
        }
        router.get("v1/payment_intents/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            return try await self.api(request, path: "/v1/payment_intents/\(id)", idempotent: false) { _ in self.readIntent(id) }
        }
        router.post("v1/payment_intents/:id/capture") { request, context in
            let id = context.parameters.get("id") ?? ""
            return try await self.api(request, path: "/v1/payment_intents/\(id)/capture") { self.capture(id, $0) }
        }
        router.post("v1/payment_intents/:id/cancel") { request, context in
            let id = context.parameters.get("id") ?? ""
            return try await self.api(request, path: "/v1/payment_intents/\(id)/cancel") { _ in self.cancel(id) }
        }
        router.post("v1/refunds") { request, context in
            try await self.api(request, path: "/v1/refunds") { self.refund($0) }
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        return Application(router: router,
                           configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "shopfleet-payments-sandbox"),
                           onServerRunning: { channel in
                               self.logger.info("payments sandbox listening", metadata: ["address": .string("\(channel.localAddress.map { "\($0)" } ?? "?")")])
                           },
                           logger: quiet)
    }

    // MARK: - The API around every endpoint: key, faults, idempotency

    /// A 401 unless the request carries the secret key (compared in constant time, so the time
    /// of a refusal says nothing about how much of a guess was right).
    func refusal(_ request: Request) -> Response? {
        let presented = request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        if let presented, apiKey.map({ Self.constantTimeEquals($0, presented) }) ?? presented.hasPrefix("sk_test_") { return nil }
        return error(.unauthorized, StripeError(type: "invalid_request_error",
                                                message: "Invalid API Key provided: \(presented.map(Self.masked) ?? "none")"))
    }

    /// Whether two strings are equal, looking at every byte of the longer whatever differs.
    static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(truncatingIfNeeded: x.count ^ y.count) | UInt8(truncatingIfNeeded: (x.count ^ y.count) >> 8)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0 && x.count == y.count
    }

    typealias Outcome = (status: HTTPResponse.Status, body: Data)

    private func api(_ request: Request, path: String, idempotent: Bool = true,
                     _ handle: @escaping @Sendable ([String: String]) -> Outcome) async throws -> Response {
        if let refused = refusal(request) { return refused }
        let bytes = try await request.body.collect(upTo: 1 << 16)
        let text = String(decoding: bytes.readableBytesView, as: UTF8.self)
        let fields = Dictionary(FormEncoding.decode(text), uniquingKeysWith: { _, last in last })

        let key = idempotent ? request.headers[Self.idempotencyKey] : nil
        let (faults, busy, limited) = state.withLock { state -> (Faults, Bool, Bool) in
            state.stats.requests += 1
            if state.faults.rateLimitNext > 0 {
                state.faults.rateLimitNext -= 1
                state.stats.rateLimited += 1
                return (state.faults, false, true)
            }
            if let key, state.idempotency[key] == nil {
                if state.inProgress.contains(key) {
                    state.stats.conflicts += 1
                    return (state.faults, true, false)
                }
                state.inProgress.insert(key)
            }
            return (state.faults, false, false)
        }
        if limited {
            return error(.tooManyRequests, StripeError(type: "invalid_request_error", code: "rate_limit",
                                                       message: "Too many requests hit the API too quickly (injected by the sandbox)."))
        }
        if busy {
            return error(.conflict, StripeError(type: "idempotency_error", code: "idempotency_key_in_use",
                                                message: "There is currently another in-progress request using this Idempotent Key. Please try again later."))
        }
        defer { if let key { state.withLock { _ = $0.inProgress.remove(key) } } }
        if faults.hold {
            await withCheckedContinuation { (request: CheckedContinuation<Void, Never>) in
                let heldNow = state.withLock { state -> Bool in
                    guard state.faults.hold else { return false }
                    state.holding.append(request)
                    state.stats.held += 1
                    return true
                }
                if !heldNow { request.resume() }
            }
        }
        if faults.latencyMilliseconds > 0 { try await Task.sleep(for: .milliseconds(faults.latencyMilliseconds)) }
        if faults.failureRate > 0, Double.random(in: 0..<1) < faults.failureRate {
            state.withLock { $0.stats.injectedFailures += 1 }
            return error(.internalServerError, StripeError(type: "api_error", message: "An unknown error occurred (injected by the sandbox)."))
        }

        // Same key and same request: the first answer again. Same key, other request: an error.
        let fingerprint = "POST \(path) " + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "&")
        let outcome: Outcome = state.withLock { state in
            if let key, let stored = state.idempotency[key] {
                guard stored.fingerprint == fingerprint else {
                    return (.badRequest, Self.encode(StripeErrorBody(error: StripeError(
                        type: "idempotency_error",
                        message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '\(key)' if you meant to execute a different request."))))
                }
                state.stats.idempotentReplays += 1
                return (stored.status, stored.body)
            }
            return (.ok, Data())
        }
        let answer: Outcome
        if outcome.body.isEmpty {
            answer = handle(fields)
            if let key {
                state.withLock { $0.idempotency[key] = Stored(fingerprint: fingerprint, status: answer.status, body: answer.body) }
            }
        } else {
            answer = outcome
        }
        if faults.dropRate > 0, Double.random(in: 0..<1) < faults.dropRate {
            // Handled, but the caller never hears: the case idempotency keys exist for.
            state.withLock { $0.stats.droppedConnections += 1 }
            struct Dropped: Error {}
            return Response(status: .ok, headers: [.contentType: "application/json", .contentLength: "1000"],
                            body: ResponseBody { _ in throw Dropped() })
        }
        return Response(status: answer.status, headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    private static let idempotencyKey = HTTPField.Name("Idempotency-Key")!

    // MARK: - Endpoints

    private static let succeeding: Set<String> = ["pm_card_visa", "pm_card_4242424242424242", "pm_card_mastercard", "pm_card_5555555555554444"]
    private static let declined: [String: (declineCode: String, message: String)] = [
        "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
        "pm_card_4000000000000002": ("generic_decline", "Your card was declined."),
        "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
        "pm_card_4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
    ]

    private func createIntent(_ fields: [String: String]) -> Outcome {
        guard let amountText = fields["amount"], let amount = Int(amountText), amount >= 1 else {
            return invalid("amount", "Missing or invalid amount: a positive whole number of minor units is required.")
        }
        guard let currency = fields["currency"], currency.count == 3 else { return invalid("currency", "Missing required param: currency.") }
        guard let method = fields["payment_method"] else { return invalid("payment_method", "Missing required param: payment_method.") }
        let manual = fields["capture_method"] == "manual"
        let confirm = fields["confirm"] == "true"
        var metadata: [String: String] = [:]
        for (name, value) in fields where name.hasPrefix("metadata[") && name.hasSuffix("]") {
            metadata[String(name.dropFirst(9).dropLast())] = value
        }
        let id = "pi_" + Self.randomID()
        var intent = PaymentIntent(id: id, amount: amount, amountCapturable: 0, amountReceived: 0, currency: currency.lowercased(),
                                   status: "requires_confirmation", captureMethod: manual ? "manual" : "automatic",
                                   paymentMethod: method, created: Int(Date().timeIntervalSince1970), metadata: metadata)
        var failure: StripeError?
        if confirm {
            if Self.succeeding.contains(method) {
                intent.status = manual ? "requires_capture" : "succeeded"
                if manual { intent.amountCapturable = amount } else { intent.amountReceived = amount }
            } else if let decline = Self.declined[method] {
                intent.status = "requires_payment_method"
                failure = StripeError(type: "card_error", code: "card_declined", declineCode: decline.declineCode, message: decline.message)
                intent.lastPaymentError = failure
            } else {
                return invalid("payment_method", "No such PaymentMethod: '\(method)'")
            }
        }
        state.withLock { state in
            state.intents[id] = intent
            state.stats.intents[intent.status, default: 0] += 1
            if let order = metadata["order_id"] { state.stats.intentsPerOrder[order, default: 0] += 1 }
        }
        if let failure {
            struct DeclineBody: Encodable { var error: Wrapped; struct Wrapped: Encodable { var type, code, declineCode, message: String; var paymentIntent: PaymentIntent } }
            return (HTTPResponse.Status(code: 402, reasonPhrase: "Payment Required"), Self.encode(DeclineBody(error: .init(type: failure.type, code: failure.code ?? "card_declined",
                                                                           declineCode: failure.declineCode ?? "generic_decline",
                                                                           message: failure.message, paymentIntent: intent))))
        }
        return (.ok, Self.encode(intent))
    }

    private func readIntent(_ id: String) -> Outcome {
        guard let intent = state.withLock({ $0.intents[id] }) else { return notFound(id) }
        return (.ok, Self.encode(intent))
    }

    private func capture(_ id: String, _ fields: [String: String]) -> Outcome {
        state.withLock { state in
            guard var intent = state.intents[id] else { return notFound(id) }
            guard intent.status == "requires_capture" else { return unexpectedState(intent, doing: "capture") }
            let amount = fields["amount_to_capture"].flatMap(Int.init) ?? intent.amountCapturable
            guard amount >= 1, amount <= intent.amountCapturable else {
                return invalid("amount_to_capture", "amount_to_capture must be between 1 and \(intent.amountCapturable).")
            }
            intent.status = "succeeded"
            intent.amountReceived = amount
            intent.amountCapturable = 0
            state.intents[id] = intent
            state.stats.intents["requires_capture", default: 0] -= 1
            state.stats.intents["succeeded", default: 0] += 1
            return (.ok, Self.encode(intent))
        }
    }

    private func cancel(_ id: String) -> Outcome {
        state.withLock { state in
            guard var intent = state.intents[id] else { return notFound(id) }
            guard ["requires_capture", "requires_payment_method", "requires_confirmation"].contains(intent.status) else {
                return unexpectedState(intent, doing: "cancel")
            }
            state.stats.intents[intent.status, default: 0] -= 1
            intent.status = "canceled"
            intent.amountCapturable = 0
            state.intents[id] = intent
            state.stats.intents["canceled", default: 0] += 1
            return (.ok, Self.encode(intent))
        }
    }

    private func refund(_ fields: [String: String]) -> Outcome {
        guard let intentID = fields["payment_intent"] else { return invalid("payment_intent", "Missing required param: payment_intent.") }
        return state.withLock { state in
            guard let intent = state.intents[intentID] else { return notFound(intentID) }
            guard intent.status == "succeeded" else { return unexpectedState(intent, doing: "refund") }
            let refunded = state.refunds.values.filter { $0.paymentIntent == intentID }.reduce(0) { $0 + $1.amount }
            let amount = fields["amount"].flatMap(Int.init) ?? (intent.amountReceived - refunded)
            guard amount >= 1, amount + refunded <= intent.amountReceived else {
                return invalid("amount", "The refund amount exceeds what is left to refund (\(intent.amountReceived - refunded)).")
            }
            let refund = Refund(id: "re_" + Self.randomID(), amount: amount, currency: intent.currency, paymentIntent: intentID, status: "succeeded")
            state.refunds[refund.id] = refund
            state.stats.refunds += 1
            return (.ok, Self.encode(refund))
        }
    }

    // MARK: - Answers

    private func invalid(_ param: String, _ message: String) -> Outcome {
        (.badRequest, Self.encode(StripeErrorBody(error: StripeError(type: "invalid_request_error", code: "parameter_invalid", message: message, param: param))))
    }

    private func notFound(_ id: String) -> Outcome {
        (.notFound, Self.encode(StripeErrorBody(error: StripeError(type: "invalid_request_error", code: "resource_missing",
                                                                   message: "No such payment_intent: '\(id)'"))))
    }

    private func unexpectedState(_ intent: PaymentIntent, doing: String) -> Outcome {
        (.badRequest, Self.encode(StripeErrorBody(error: StripeError(
            type: "invalid_request_error", code: "payment_intent_unexpected_state",
            message: "This PaymentIntent could not be \(doing == "cancel" ? "canceled" : doing + "d") because it has a status of \(intent.status)."))))
    }

    private func json<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: Self.encode(value))))
    }

    private func error(_ status: HTTPResponse.Status, _ error: StripeError) -> Response {
        json(status, StripeErrorBody(error: error))
    }

    static func encode<T: Encodable>(_ value: T) -> Data {
        (try? StripeJSON.encoder().encode(value)) ?? Data("{}".utf8)
    }

    static func masked(_ key: String) -> String {
        key.count <= 12 ? "****" : String(key.prefix(8)) + "****" + String(key.suffix(4))
    }

    static func randomID() -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        return String((0..<24).map { _ in alphabet.randomElement()! })
    }
}
