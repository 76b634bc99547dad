import ClientRuntime
import FoundationEssentials
import PaymentsSandbox
import Sagas
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

            // The retry goes while the gateway still fails: a void still waiting in a retry tier
            // cannot succeed first and finish the saga before the retry is taken (a late reply moves
            // a parked saga on by itself). Once the saga has taken the retry, the gateway is fixed.
            _ = try await shopfleet(fleet, "saga", "retry", id)
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.steps(id))?.contains { $0.kind == .received && $0.name == "retry-requested" } == true
            }
            try await fleet.setFaults(PaymentsSandbox.Faults())
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

    struct Letter: Decodable { var id: String; var type: String; var errorType: String; var status: String; var sagaID: String? }
    struct StuckWithLetters: Decodable {
        struct Saga: Decodable { var id: String; var deadLetters: Int }
        var state: String
        var sagas: [Saga]
    }

    /// The gateway fails every call: the authorization runs out of retries and is dead-lettered.
    /// The saga waits (its payment timeout is long); `saga stuck` and `saga show` say it has a dead
    /// letter; once the gateway works, replaying the letter moves the saga on to completion.
    @Test func aDeadLetteredStepShowsInTheSagaAndAReplayMovesItOn() async throws {
        // The saga sends nothing again by itself meanwhile (resend 10 min): only the replay can move it on.
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT": "10m", "SHOPFLEET_CHECKOUT_RESEND_AFTER": "10m",
                                                   "SHOPFLEET_CHECKOUT_RESEND_LIMIT": "10m"],
                                     topologyFile: CheckoutFleet.shortRetriesTopologyFile) { fleet in
            let mug = CheckoutFleet.product("MUG-DL", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 3)])
            var broken = PaymentsSandbox.Faults()
            broken.failureRate = 1
            try await fleet.setFaults(broken)
            let id = try await fleet.placeOrder([(mug, 1)])

            var letters: [Letter] = []
            try await waitUntil(deadline: .seconds(60)) {
                let json = try? await shopfleet(fleet, "dlq", "list", "--saga", id, "--json")
                letters = json.flatMap { try? JSONDecoder().decode([Letter].self, from: Data($0.utf8)) } ?? []
                return !letters.isEmpty
            }
            let letter = try #require(letters.first)
            #expect(letters.count == 1)
            #expect(letter.type == "payments.AuthorizePayment.v1" && letter.errorType == "retries-exhausted")
            #expect(try await fleet.order(id)?.status == "pending")

            let stuck = try JSONDecoder().decode([StuckWithLetters].self,
                                                 from: Data(try await shopfleet(fleet, "saga", "stuck", "--older-than", "1ms", "--json").utf8))
            #expect(stuck.contains { $0.state == "authorizing_payment" && $0.sagas.contains { $0.id == id && $0.deadLetters == 1 } })
            #expect(try await shopfleet(fleet, "saga", "stuck", "--older-than", "1ms").contains("1 dead letter waiting"))
            let timeline = try await shopfleet(fleet, "saga", "show", id)
            #expect(timeline.contains("dead-letter") && timeline.contains(letter.id))

            try await fleet.setFaults(PaymentsSandbox.Faults())
            _ = try await shopfleet(fleet, "dlq", "replay", letter.id)
            let order = try await fleet.waitForSaga(id, in: Self.terminal, deadline: .seconds(60))
            #expect(order.status == "completed")
            #expect(try await fleet.sandboxStats().intentsPerOrder[id] == 1)
            #expect(try await fleet.stock("MUG-DL") == (onHand: 2, reserved: 0))
            let after = try JSONDecoder().decode([Letter].self, from: Data(try await shopfleet(fleet, "dlq", "list", "--saga", id, "--status", "all", "--json").utf8))
            #expect(after.map(\.status) == ["replayed"])
        }
    }

    static let terminal: Set<String> = ["completed", "cancelled"]

    @Test func cancelCompensatesASagaInFlightAndListFiltersByState() async throws {
        try await CheckoutFleet.with { fleet in
            // The authorization stays in the gateway until the operator's cancel has been handled.
            let id = try await CheckoutFlowTests.placeHeldOrder(fleet, "MUG-C", stock: 3).id
            _ = try await shopfleet(fleet, "saga", "cancel", id, "--reason", "fraud check")
            try await fleet.waitForSaga(id, in: ["voiding_payment", "releasing_stock", "cancelled"], deadline: .seconds(20))
            try await fleet.setFaults(PaymentsSandbox.Faults())
            let order = try await fleet.waitForSaga(id, in: ["cancelled"], deadline: .seconds(30))
            #expect(order.reason == "cancelled by an operator: fraud check")
            let listed = try await shopfleet(fleet, "saga", "list", "--state", "cancelled")
            #expect(listed.contains(id))
            #expect(!(try await shopfleet(fleet, "saga", "list", "--state", "completed")).contains(id))
            #expect(try await shopfleet(fleet, "saga", "graph").hasPrefix("stateDiagram-v2"))
        }
    }
}
