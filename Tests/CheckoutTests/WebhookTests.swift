import ClientRuntime
import Contracts
import FoundationEssentials
import HTTPTypes
import Hummingbird
import Logging
import Messaging
import NIOCore
@testable import Notifications
import ShopfleetTesting
import Synchronization
import Testing

/// Order events as signed webhook calls: a receiver that fails once (5xx, or 429) gets the call
/// again, one that refuses it (a 4xx other than 408 and 429) does not, and the signature verifies
/// with the shared secret.
@Suite("Order webhooks", .serialized)
struct WebhookTests {
    struct Call: Sendable {
        var signature: String
        var timestamp: String
        var delivery: String
        var event: String
        var body: String
    }

    @Test func ordersEventsArePostedSignedAndRetriedUntilTheReceiverTakesThem() async throws {
        let calls = Mutex<[Call]>([])
        // What the receiver answers next, in turn; 200 once these are used up.
        let answers = Mutex<[HTTPResponse.Status]>([.internalServerError])
        let port = TestServers.freePort()
        let router = Router()
        router.post("hook") { request, _ -> Response in
            let body = String(decoding: try await request.body.collect(upTo: 1 << 20).readableBytesView, as: UTF8.self)
            func header(_ name: String) -> String { request.headers[HTTPField.Name(name)!] ?? "" }
            calls.withLock { calls in
                calls.append(Call(signature: header("X-Shopfleet-Signature"), timestamp: header("X-Shopfleet-Timestamp"),
                                  delivery: header("X-Shopfleet-Delivery"), event: header("X-Shopfleet-Event"), body: body))
            }
            return Response(status: answers.withLock { $0.isEmpty ? .ok : $0.removeFirst() })
        }
        let receiver = Task { try await Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port))).run() }
        defer { receiver.cancel() }
        // Listening before the fleet draws its ports, so none of them can be this one.
        try await waitUntil(deadline: .seconds(10)) { CheckoutFleet.accepts(port: port) }

        let secret = "whsec_" + UUIDv7.generate()
        try await CheckoutFleet.with(environment: ["SHOPFLEET_WEBHOOK_URL": "http://127.0.0.1:\(port)/hook",
                                                   "SHOPFLEET_WEBHOOK_SECRET": secret]) { fleet in
            let mug = CheckoutFleet.product("MUG-W", price: 700)
            try await fleet.seed([.init(product: mug, stock: 3)])
            let id = try await fleet.placeOrder([(mug, 1)])
            #expect(try await fleet.waitForSaga(id, in: ["completed"]).status == "completed")
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'webhook' AND status = 'sent'", [id])) == 1
            }
            // The first call failed (500): the notification came again.
            let received = calls.withLock { $0 }
            #expect(received.count == 2)
            for call in received {
                #expect(call.event == "orders.OrderConfirmed.v1")
                #expect(call.delivery == "\(id).orders.OrderConfirmed.v1@shopfleet")
                let expected = "sha256=" + HMACSHA256.hex(key: Array(secret.utf8), message: Array("\(call.timestamp).\(call.body)".utf8))
                #expect(call.signature == expected)
                let event = try JSONDecoder().decode(OrderConfirmed.self, from: Data(call.body.utf8))
                #expect(event.order.orderID == id)
                #expect(event.order.total == Money(amount: 700, currency: "EUR"))
            }
            #expect(try await fleet.count("SELECT attempts FROM notifications.notifications WHERE order_id = $1 AND channel = 'webhook'", [id]) == 2)
            // The email went once, untouched by the webhook's failure.
            #expect(try fleet.mails().count == 1)

            // 410: refused for good, never asked again; the email still goes.
            answers.withLock { $0 = [.gone] }
            let refused = try await fleet.placeOrder([(mug, 1)])
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'webhook' AND status = 'failed' AND error LIKE '%410%'", [refused])) == 1
            }
            // 429: asked again later, then taken.
            answers.withLock { $0 = [.tooManyRequests] }
            let throttled = try await fleet.placeOrder([(mug, 1)])
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'webhook' AND status = 'sent'", [throttled])) == 1
            }
            let deliveries = calls.withLock { $0.map(\.delivery) }
            // By now a retry of the refused call (1 s tier) would have come along with the 429's.
            #expect(deliveries.filter { $0.hasPrefix(refused) }.count == 1)
            #expect(deliveries.filter { $0.hasPrefix(throttled) }.count == 2)
            #expect(try await fleet.count("SELECT attempts FROM notifications.notifications WHERE order_id = $1 AND channel = 'webhook'", [refused]) == 1)
            try await waitUntil(deadline: .seconds(30)) { (try? fleet.mails().count) == 3 }
        }
    }
}
