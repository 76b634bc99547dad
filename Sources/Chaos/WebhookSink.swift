import FoundationEssentials
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// Where the fleet's notifications POST their webhook calls during a chaos run: it answers 200 and
/// keeps the order, the event and the delivery id of each call, for the ledger.
final class WebhookSink: Sendable {
    let port: Int
    private let received = Mutex<[LedgerSnapshot.Delivery]>([])

    init(port: Int) { self.port = port }

    var deliveries: [LedgerSnapshot.Delivery] { received.withLock { $0 } }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.post("/") { request, _ -> Response in
            let event = request.headers[HTTPField.Name("X-Shopfleet-Event")!] ?? ""
            let delivery = request.headers[HTTPField.Name("X-Shopfleet-Delivery")!] ?? ""
            // The delivery id is `<order>.<event>@shopfleet`, the same on every attempt.
            let suffix = ".\(event)@shopfleet"
            let order = delivery.hasSuffix(suffix) ? String(delivery.dropLast(suffix.count)) : delivery
            _ = try await request.body.collect(upTo: 1 << 20)
            self.received.withLock { $0.append(LedgerSnapshot.Delivery(orderID: order, event: event, deliveryID: delivery)) }
            return Response(status: .ok)
        }
        var logger = Logger(label: "shopfleet.chaos.webhooks")
        // Stopping the run cancels the server, which it reports as errors; nothing else is worth saying.
        logger.logLevel = .critical
        return Application(router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: port)), logger: logger)
    }
}
