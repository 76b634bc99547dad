import ClientRuntime
import FoundationEssentials
import PaymentsSandbox
import Testing

/// `shopfleet saga` against a running fleet: a compensation that keeps failing parks the saga, `stuck`
/// finds it, `retry` finishes it once the cause is gone; `cancel` compensates a saga in flight.
@Suite("shopfleet saga", .serialized)
struct SagaCommandTests {
    struct StuckGroup: Decodable {
        struct Saga: Decodable { var id: String; var state: String }
        var state: String
        var count: Int
        var sagas: [Saga]
    }

    struct Shown: Decodable {
        struct Saga: Decodable { var id: String; var state: String; var terminal: Bool; var labels: [String: String] }
        struct Step: Decodable { var seq: Int; var kind: String; var name: String; var messageID: String? }
        var saga: Saga
        var steps: [Step]
    }

    func shopfleet(_ fleet: CheckoutFleet, _ arguments: String...) async throws -> String {
        try await ChildProcess.check([CheckoutFleet.binary] + arguments, extraEnvironment: fleet.environment)
    }

    @Test func aFailedCompensationIsParkedFoundByStuckAndFinishedByRetry() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT": "1s", "SHOPFLEET_CHECKOUT_STEP_TIMEOUT": "1s"]) { fleet in
            let mug = CheckoutFleet.product("MUG-S", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 3)])
            var broken = PaymentsSandbox.Faults()
            broken.failureRate = 1
            try await fleet.setFaults(broken)
            let id = try await fleet.placeOrder([(mug, 1)])
            // The authorization never gets an answer, the saga voids, the void cannot reach the gateway either.
            let parked = try await fleet.waitForSaga(id, in: ["compensation_failed"], deadline: .seconds(40))
            #expect(parked.status == "cancelling")
            #expect(parked.reason?.contains("voiding_payment") == true)

            try await waitUntil(deadline: .seconds(10)) {
                let json = try? await shopfleet(fleet, "saga", "stuck", "--older-than", "1s", "--json")
                let groups = json.flatMap { try? JSONDecoder().decode([StuckGroup].self, from: Data($0.utf8)) } ?? []
                return groups.contains { $0.state == "compensation_failed" && $0.sagas.contains { $0.id == id } }
            }

            try await fleet.setFaults(PaymentsSandbox.Faults())
            _ = try await shopfleet(fleet, "saga", "retry", id)
            let order = try await fleet.waitForSaga(id, in: ["cancelled"], deadline: .seconds(30))
            #expect(order.status == "cancelled")
            #expect(try await fleet.stock("MUG-S") == (onHand: 3, reserved: 0))
            // Whatever the gateway authorized on the way was voided.
            #expect(try await fleet.sandboxStats().intents["requires_capture", default: 0] == 0)

            let shown = try JSONDecoder().decode(Shown.self, from: Data(try await shopfleet(fleet, "saga", "show", id, "--json").utf8))
            #expect(shown.saga.state == "cancelled" && shown.saga.terminal)
            #expect(shown.saga.labels["customer"] == "cus-test")
            #expect(shown.steps.map(\.seq) == Array(1...shown.steps.count))
            #expect(shown.steps.contains { $0.kind == "received" && $0.name == "retry-requested" })
            #expect(shown.steps.filter { $0.kind == "sent" }.allSatisfy { $0.messageID != nil })
        }
    }

    @Test func cancelCompensatesASagaInFlightAndListFiltersByState() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-C", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 3)])
            var slow = PaymentsSandbox.Faults()
            slow.latencyMilliseconds = 1500
            try await fleet.setFaults(slow)
            let id = try await fleet.placeOrder([(mug, 1)])
            try await fleet.waitForSaga(id, in: ["authorizing_payment"], deadline: .seconds(20))
            _ = try await shopfleet(fleet, "saga", "cancel", id, "--reason", "fraud check")
            let order = try await fleet.waitForSaga(id, in: ["cancelled"], deadline: .seconds(30))
            #expect(order.reason == "cancelled by an operator: fraud check")
            let listed = try await shopfleet(fleet, "saga", "list", "--state", "cancelled")
            #expect(listed.contains(id))
            #expect(!(try await shopfleet(fleet, "saga", "list", "--state", "completed")).contains(id))
            #expect(try await shopfleet(fleet, "saga", "graph").hasPrefix("stateDiagram-v2"))
        }
    }
}
