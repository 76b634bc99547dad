import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ShopfleetTesting
import Synchronization
@testable import Payments
@testable import PaymentsSandbox
import Testing

/// The Stripe-compatible client against the sandbox, over real HTTP: test cards, idempotency the
/// way Stripe does it, and faults that a client must survive without charging twice.
@Suite("Payment gateway and sandbox")
struct GatewayTests {
    static let key = "sk_test_gateway_tests"

    /// Runs `body` with a sandbox listening on a port of its own and a gateway client for it.
    func withSandbox(faults: PaymentsSandbox.Faults = .init(), attempts: Int = 3, timeout: Duration = .seconds(2),
                     _ body: (PaymentsSandbox, PaymentGateway, String) async throws -> Void) async throws {
        let port = TestServers.freePort()
        let sandbox = PaymentsSandbox(apiKey: Self.key, faults: faults, logger: Logger(label: "sandbox"))
        let server = Task { try await sandbox.application(port: port).run() }
        defer { server.cancel() }
        let base = "http://127.0.0.1:\(port)"
        try await waitUntil(deadline: .seconds(10)) {
            (try? await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/healthz"), timeout: .seconds(1)).status.code) == 200
        }
        var configuration = PaymentGateway.Configuration(baseURL: base, apiKey: Self.key)
        configuration.attempts = attempts
        configuration.timeout = timeout
        configuration.backoff = Backoff(initial: .milliseconds(5), maximum: .milliseconds(20))
        try await body(sandbox, PaymentGateway(configuration: configuration), base)
    }

    @Test func testCardsAuthorizeOrDeclineWithStripesCodes() async throws {
        try await withSandbox { _, gateway, _ in
            let intent = try await gateway.authorize(amount: 2500, currency: "EUR", paymentMethod: "pm_card_4242424242424242",
                                                     orderID: "o1", idempotencyKey: "o1:authorize")
            #expect(intent.status == "requires_capture")
            #expect(intent.amountCapturable == 2500 && intent.currency == "eur")
            let captured = try await gateway.capture(intent.id, idempotencyKey: "o1:capture")
            #expect(captured.status == "succeeded" && captured.amountReceived == 2500)
            let refund = try await gateway.refund(intent.id, idempotencyKey: "o1:refund")
            #expect(refund.amount == 2500)

            for (card, declineCode) in [("pm_card_4000000000000002", "generic_decline"), ("pm_card_4000000000009995", "insufficient_funds")] {
                do {
                    _ = try await gateway.authorize(amount: 100, currency: "EUR", paymentMethod: card, orderID: card, idempotencyKey: card)
                    Issue.record("\(card) was not declined")
                } catch PaymentGateway.Failure.declined(let code, let decline, let message) {
                    #expect(code == "card_declined")
                    #expect(decline == declineCode)
                    #expect(!message.isEmpty)
                }
            }
        }
    }

    @Test func voidingCancelsAnAuthorizationAndCaptureThenFailsClearly() async throws {
        try await withSandbox { _, gateway, _ in
            let intent = try await gateway.authorize(amount: 900, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o2", idempotencyKey: "o2:a")
            #expect(try await gateway.cancel(intent.id, idempotencyKey: "o2:void").status == "canceled")
            do {
                _ = try await gateway.capture(intent.id, idempotencyKey: "o2:capture")
                Issue.record("captured a canceled intent")
            } catch PaymentGateway.Failure.rejected(let status, _, let message) {
                #expect(status == 400)
                #expect(message.contains("canceled"))
            }
        }
    }

    @Test func sameKeySameRequestIsTheSameAnswerAndSameKeyOtherRequestIsAnError() async throws {
        try await withSandbox { sandbox, gateway, _ in
            let first = try await gateway.authorize(amount: 500, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o3", idempotencyKey: "k3")
            let again = try await gateway.authorize(amount: 500, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o3", idempotencyKey: "k3")
            #expect(first == again)
            do {
                _ = try await gateway.authorize(amount: 600, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o3", idempotencyKey: "k3")
                Issue.record("a different request with the same key went through")
            } catch PaymentGateway.Failure.rejected(_, let type, _) {
                #expect(type == "idempotency_error")
            }
            let stats = sandbox.state.withLock { $0.stats }
            #expect(stats.intentsPerOrder["o3"] == 1)
            #expect(stats.idempotentReplays == 1)
        }
    }

    @Test func serverErrorsAndLostAnswersAreRetriedWithTheSameKeyAndChargeOnce() async throws {
        var faults = PaymentsSandbox.Faults()
        faults.failureRate = 0.3
        faults.dropRate = 0.3
        try await withSandbox(faults: faults, attempts: 20) { sandbox, gateway, _ in
            for index in 0..<20 {
                let intent = try await gateway.authorize(amount: 100 + index, currency: "EUR", paymentMethod: "pm_card_visa",
                                                         orderID: "order-\(index)", idempotencyKey: "order-\(index):authorize")
                #expect(intent.amount == 100 + index)
            }
            let stats = sandbox.state.withLock { $0.stats }
            // The faults happened, and still every order has exactly one intent.
            #expect(stats.injectedFailures > 0)
            #expect(stats.droppedConnections > 0)
            #expect(stats.intentsPerOrder.count == 20)
            #expect(stats.intentsPerOrder.values.allSatisfy { $0 == 1 })
        }
    }

    /// The first request hangs in the gateway (held) until the client's timeout; the client asks
    /// again under the same key and gets 409 while the first is still being handled; once it is
    /// let go, the next retry gets its answer. One charge.
    @Test func aTimeoutThenA409AreRetriedWithTheSameKeyAndChargeOnce() async throws {
        var faults = PaymentsSandbox.Faults()
        faults.hold = true
        try await withSandbox(faults: faults, attempts: 200, timeout: .milliseconds(300)) { sandbox, gateway, base in
            let authorizing = Task {
                try await gateway.authorize(amount: 700, currency: "EUR", paymentMethod: "pm_card_visa",
                                            orderID: "o-held", idempotencyKey: "o-held:authorize")
            }
            try await waitUntil(deadline: .seconds(20)) { sandbox.state.withLock { $0.stats.conflicts } >= 2 }
            #expect(sandbox.state.withLock { $0.stats.held } == 1)
            // Let the first request go, as a gateway that was only slow would.
            var request = HTTPClientRequest(url: base + "/_sandbox/faults")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(Self.key)")
            request.body = .bytes(ByteBuffer(string: "{}"))
            #expect(try await HTTPClient.shared.execute(request, timeout: .seconds(5)).status == .ok)
            let intent = try await authorizing.value
            #expect(intent.amount == 700 && intent.status == "requires_capture")
            let stats = sandbox.state.withLock { $0.stats }
            #expect(stats.intentsPerOrder == ["o-held": 1])
            #expect(stats.idempotentReplays >= 1, "the client's answer can only have come from a replay: its first request timed out")
        }
    }

    /// 429 is retried (with the same key) like a 5xx: the request goes through once the gateway
    /// takes requests again; a client out of attempts calls it unavailable, never declined.
    @Test func rateLimitedRequestsAreRetriedAndChargeOnce() async throws {
        var faults = PaymentsSandbox.Faults()
        faults.rateLimitNext = 3
        try await withSandbox(faults: faults, attempts: 5) { sandbox, gateway, _ in
            let intent = try await gateway.authorize(amount: 800, currency: "EUR", paymentMethod: "pm_card_visa",
                                                     orderID: "o-429", idempotencyKey: "o-429:authorize")
            #expect(intent.amount == 800)
            let stats = sandbox.state.withLock { $0.stats }
            #expect(stats.rateLimited == 3)
            #expect(stats.intentsPerOrder == ["o-429": 1])
        }
        faults.rateLimitNext = 10
        try await withSandbox(faults: faults, attempts: 2) { _, gateway, _ in
            do {
                _ = try await gateway.authorize(amount: 100, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o-429b", idempotencyKey: "o-429b")
                Issue.record("succeeded against a gateway answering 429")
            } catch PaymentGateway.Failure.unavailable(let message) {
                #expect(message.contains("429"), "\(message)")
            }
        }
    }

    @Test func aGatewayThatKeepsFailingIsUnavailableNotDeclined() async throws {
        var faults = PaymentsSandbox.Faults()
        faults.failureRate = 1
        try await withSandbox(faults: faults, attempts: 2) { _, gateway, _ in
            do {
                _ = try await gateway.authorize(amount: 100, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o5", idempotencyKey: "o5")
                Issue.record("succeeded against a failing gateway")
            } catch PaymentGateway.Failure.unavailable(let message) {
                #expect(message.contains("500"))
                #expect(message.contains("after 2 attempts"))
            }
        }
    }

    @Test func aWrongKeyIsRefusedAndNotEchoed() async throws {
        try await withSandbox { _, _, base in
            let gateway = PaymentGateway(configuration: .init(baseURL: base, apiKey: "sk_test_wrong_key_123456"))
            do {
                _ = try await gateway.authorize(amount: 100, currency: "EUR", paymentMethod: "pm_card_visa", orderID: "o6", idempotencyKey: "o6")
                Issue.record("a wrong key was accepted")
            } catch PaymentGateway.Failure.rejected(let status, _, let message) {
                #expect(status == 401)
                #expect(!message.contains("sk_test_wrong_key_123456"))
            }
        }
    }

    @Test func formEncodingRoundTrips() {
        let fields = [("metadata[order_id]", "a b&c=d/é"), ("amount", "100")]
        let encoded = FormEncoding.encode(fields)
        #expect(encoded == "metadata[order_id]=a%20b%26c%3Dd%2F%C3%A9&amount=100")
        #expect(FormEncoding.decode(encoded).map { "\($0.0)=\($0.1)" } == fields.map { "\($0.0)=\($0.1)" })
        #expect(FormEncoding.decode("a=x+y").first?.1 == "x y")
    }
}
