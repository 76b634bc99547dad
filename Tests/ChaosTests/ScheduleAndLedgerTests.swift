import Chaos
import Fleet
import FoundationEssentials
import Testing

/// The chaos runner's decisions without a fleet: the fault schedule and the orders a seed names,
/// and the ledger's checks, each shown to catch what it promises to catch.
@Suite("Chaos: schedule, orders and ledger")
struct ScheduleAndLedgerTests {
    let plan = FleetPlan.shop(binary: "/bin/shopfleet", python: "/bin/python", environment: [:], ports: .block(from: 20_000, edges: 2),
                              replicas: ["orders": 2, "edge": 2])

    @Test func theSameSeedGivesTheSameScheduleAndKillsOnlyTheFleetsOwnProcesses() {
        let first = ChaosRun.schedule(.ci, plan: plan)
        #expect(first == ChaosRun.schedule(.ci, plan: plan))
        var other = ChaosScenario.ci
        other.seed = 2
        #expect(first != ChaosRun.schedule(other, plan: plan))

        let kills = first.compactMap { fault -> (Double, String)? in
            if case .kill(let process) = fault.fault { return (fault.at, process) }
            return nil
        }
        // A kill every 1 to 2 s for 30 s.
        #expect((14...30).contains(kills.count))
        for (previous, next) in zip(kills, kills.dropFirst()) { #expect((1...2).contains(next.0 - previous.0)) }
        #expect(kills.allSatisfy { $0.0 < 30 })
        let killable = Set(plan.processes.filter { $0.kind == .worker || $0.kind == .edge }.map(\.name))
        #expect(kills.allSatisfy { killable.contains($0.1) })
        #expect(!kills.contains { $0.1 == "payments-sandbox" || $0.1 == "smtp-sink" })
        // And the servers, at their times.
        #expect(first.contains { $0.at == 8 && $0.fault == .restart(server: .rabbitmq, downFor: 0) })
        #expect(first.contains { $0.at == 19 && $0.fault == .restart(server: .postgres, downFor: 0) })
        #expect(first.map(\.at) == first.map(\.at).sorted())
    }

    @Test func theLongScenarioHasEveryKindOfFault() {
        let schedule = ChaosRun.schedule(.long, plan: plan)
        let kinds = Set(schedule.map(\.fault.kind))
        #expect(kinds == ["kill", "freeze", "rabbitmq", "postgres", "redis", "gateway"])
        #expect(schedule.contains { $0.fault == .restart(server: .postgres, downFor: 45) })
        // A frozen worker stays frozen longer than two AMQP heartbeats: the broker drops it.
        #expect(schedule.allSatisfy { if case .freeze(_, let seconds) = $0.fault { return seconds > 2 * Double(ChaosScenario.long.heartbeatSeconds) }; return true })
    }

    @Test func aSeedNamesTheSameOrdersAndAMixOfOutcomes() {
        let mix = ShopperMix(seed: 7)
        #expect((0..<50).map(mix.order) == (0..<50).map(ShopperMix(seed: 7).order))
        let orders = (0..<2000).map(mix.order)
        let declined = orders.filter { $0.card != .good }.count
        #expect((200...400).contains(declined))
        #expect((50...150).contains(orders.filter(\.cancels).count))
        #expect(orders.contains(where: \.scarce) && orders.contains(where: \.mustComplete))
        #expect(orders.allSatisfy { !$0.lines.isEmpty && $0.lines.allSatisfy { (1...2).contains($0.quantity) } })
        #expect(mix.order(3).idempotencyKey(seed: 7) == "chaos-7-3")
    }

    // MARK: - The ledger

    let good = ShopperMix.Order(number: 0, lines: [.init(productID: "chaos-p1", quantity: 2)], card: .good, cancels: false, scarce: false)
    let declined = ShopperMix.Order(number: 1, lines: [.init(productID: "chaos-p1", quantity: 1)], card: .declined, cancels: false, scarce: false)

    /// Two orders as they should end: one completed (stock, capture, email, webhook), one declined.
    func clean() -> (LedgerSnapshot, LedgerExpectations) {
        var snapshot = LedgerSnapshot()
        let now = Date()
        snapshot.orders["o1"] = .init(id: "o1", status: "completed", reason: nil, total: 1000, sagaState: "completed", updatedAt: now, lines: ["SKU-1": 2])
        snapshot.orders["o2"] = .init(id: "o2", status: "cancelled", reason: "payment declined: Your card was declined.", total: 500,
                                      sagaState: "cancelled", updatedAt: now, lines: ["SKU-1": 1])
        snapshot.stock["SKU-1"] = .init(onHand: 8, reserved: 0)
        snapshot.intents = [.init(id: "pi_1", orderID: "o1", status: "succeeded", amount: 1000, amountReceived: 1000),
                            .init(id: "pi_2", orderID: "o2", status: "requires_payment_method", amount: 500, amountReceived: 0)]
        snapshot.mails = [.init(orderID: "o1", event: Ledger.events.confirmed, deliveryID: "<o1.c@shopfleet>"),
                          .init(orderID: "o2", event: Ledger.events.cancelled, deliveryID: "<o2.x@shopfleet>")]
        snapshot.webhooks = snapshot.mails
        snapshot.deadLetters = [.init(id: "l1", messageID: "poison", type: "orders.PlaceOrder.v1", queue: "orders.commands",
                                      errorType: "undecodable", reason: "not JSON")]
        snapshot.queues = ["orders.commands": 0]
        let expected = LedgerExpectations(accepted: ["o1": good, "o2": declined], refused: [], initialStock: ["SKU-1": 10],
                                          injectedLetters: ["poison": "undecodable"], planned: 2, copiesExplained: 1)
        return (snapshot, expected)
    }

    func broken(_ change: (inout LedgerSnapshot) -> Void) -> [Violation] {
        var (snapshot, expected) = clean()
        change(&snapshot)
        return Ledger.check(snapshot, expected).violations
    }

    @Test func aCleanLedgerPasses() {
        let (snapshot, expected) = clean()
        let (checks, violations) = Ledger.check(snapshot, expected)
        #expect(violations.isEmpty, "\(violations)")
        #expect(checks.count == 10 && checks.allSatisfy(\.passed))
    }

    @Test func everyCheckCatchesWhatItPromises() {
        #expect(broken { $0.orders["o1"] = nil }.contains { $0.check == "terminal" && $0.subject == "order o1" })
        #expect(broken { $0.orders["o1"]?.status = "confirmed"; $0.orders["o1"]?.sagaState = "capturing_payment" }
            .contains { $0.check == "terminal" })
        #expect(broken { $0.orders["o2"]?.reason = "inventory did not answer within 30.0 seconds" }
            .contains { $0.check == "business" && $0.detail.contains("inventory did not answer") })
        #expect(broken {
            $0.orders["o1"]?.status = "cancelled"; $0.orders["o1"]?.sagaState = "cancelled"; $0.orders["o1"]?.reason = "out of stock: SKU-1"
        }.contains { $0.check == "outcome" })
        #expect(broken { $0.stock["SKU-1"]?.onHand = 7 }.contains { $0.check == "stock" && $0.subject == "SKU SKU-1" })
        #expect(broken { $0.stock["SKU-1"]?.reserved = 1 }.contains { $0.check == "stock" })
        #expect(broken { $0.openReservations = ["o9"] }.contains { $0.check == "stock" && $0.subject == "reservation o9" })
        #expect(broken { $0.intents.append(.init(id: "pi_3", orderID: "o1", status: "canceled", amount: 1000, amountReceived: 0)) }
            .contains { $0.check == "gateway" && $0.detail.contains("2 payment intents") })
        #expect(broken { $0.intents[1].status = "requires_capture" }.contains { $0.check == "gateway" && $0.detail.contains("never captured") })
        #expect(broken { $0.intents[0].amountReceived = 900 }.contains { $0.check == "gateway" })
        #expect(broken { $0.mails.append(.init(orderID: "o1", event: Ledger.events.confirmed, deliveryID: "<another@shopfleet>")) }
            .contains { $0.check == "emails" && $0.subject == "order o1" })
        #expect(broken { $0.mails.removeFirst() }.contains { $0.check == "emails" })
        #expect(broken { $0.webhooks = [] }.contains { $0.check == "webhooks" })
        #expect(broken { $0.deadLetters.append(.init(id: "l2", messageID: "m2", type: "cart.SetCartLine.v1", queue: "cart.queries",
                                                     errorType: "expired", reason: "expired")) }
            .contains { $0.check == "dead letters" && $0.subject.contains("cart.SetCartLine.v1") })
        #expect(broken { $0.deadLetters = [] }.contains { $0.check == "dead letters" && $0.detail.contains("not in the store") })
        #expect(broken { $0.queues["cart.queries"] = 3 }.contains { $0.check == "quiet" && $0.subject == "queue cart.queries" })
        #expect(broken { $0.unpublishedOutbox["orders"] = 1 }.contains { $0.check == "quiet" })
        #expect(broken { $0.openSagas["o7"] = "authorizing_payment" }.contains { $0.check == "quiet" && $0.subject == "saga o7" })
        #expect(broken { $0.pendingNotifications = 2 }.contains { $0.check == "quiet" })
        // An order nobody was told of; a cancel whose reason does not fit what the order asked for.
        #expect(broken {
            $0.orders["o9"] = .init(id: "o9", status: "completed", reason: nil, total: 0, sagaState: "completed", updatedAt: Date(), lines: [:])
        }.contains { $0.check == "accepted" && $0.subject == "order o9" })
        #expect(broken { $0.orders["o2"]?.reason = "cancelled by the customer: changed my mind" }.contains { $0.check == "outcome" })
        // More copies of one email than the faults explain.
        #expect(broken { $0.mails += [$0.mails[0], $0.mails[0]] }.contains { $0.check == "emails" && $0.subject == "the SMTP sink" })
    }

    @Test func anOrderNeverAcceptedIsAViolationAndACopyOfOneEmailIsNot() {
        var (snapshot, expected) = clean()
        expected.refused = [(declined, "503 the message broker is unreachable")]
        #expect(Ledger.check(snapshot, expected).violations.contains { $0.check == "accepted" && $0.subject == "order #1" })
        expected.refused = []
        expected.planned = 3
        #expect(Ledger.check(snapshot, expected).violations.contains { $0.check == "accepted" && $0.detail.contains("2 of 3 orders were tried") })
        expected.planned = 2
        snapshot.mails.append(snapshot.mails[0])
        #expect(Ledger.check(snapshot, expected).violations.isEmpty)
        #expect(Ledger.redeliveredCopies(snapshot.mails) == 1)
    }
}
