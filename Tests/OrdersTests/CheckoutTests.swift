import Contracts
import FoundationEssentials
import Messaging
@testable import Orders
import Sagas
import Testing

/// The checkout saga's decisions, without a server: every path from the issue, step by step.
@Suite("Checkout saga transitions")
struct CheckoutTransitionTests {
    let saga = Checkout()
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    var data: Checkout.Data {
        Checkout.Data(orderID: "order-1", customerID: "cus-1", customerEmail: "ada@example.com",
                      lines: [OrderLine(productID: "p1", sku: "MUG-001", name: "Mug", quantity: 2, unitPrice: Money(amount: 1250, currency: "EUR"))],
                      total: Money(amount: 2500, currency: "EUR"), paymentMethod: "pm_card_visa", placedAt: now)
    }

    /// Runs inputs from `placed`, returning every transition.
    func run(_ inputs: [Checkout.Input]) -> [SagaTransition<Checkout.State, Checkout.Data>] {
        var state = Checkout.initialState
        var current = data
        var out: [SagaTransition<Checkout.State, Checkout.Data>] = []
        for input in inputs {
            let next = saga.transition(from: state, data: current, on: input, now: now)
            out.append(next)
            state = next.state
            current = next.data
        }
        return out
    }

    func sent(_ transition: SagaTransition<Checkout.State, Checkout.Data>) -> [String] {
        transition.actions.compactMap { action in
            switch action {
            case .send(let command): return type(of: command).type
            case .publish(let event): return type(of: event).type
            case .schedule(let name, _): return "timeout:\(name)"
            }
        }
    }

    @Test func happyPathReservesAuthorizesConfirmsCapturesAndCompletes() {
        let steps = run([.place, .stockReserved, .paymentAuthorized, .reservationCommitted, .paymentCaptured])
        #expect(steps.map(\.state) == [.reservingStock, .authorizingPayment, .committingStock, .capturingPayment, .completed])
        #expect(sent(steps[0]) == ["orders.OrderPlaced.v1", "inventory.ReserveStock.v1", "timeout:reserving_stock"])
        #expect(sent(steps[1]) == ["payments.AuthorizePayment.v1", "timeout:authorizing_payment"])
        #expect(sent(steps[2]) == ["inventory.CommitReservation.v1", "timeout:committing_stock"])
        #expect(sent(steps[3]) == ["orders.OrderConfirmed.v1", "payments.CapturePayment.v1", "timeout:capturing_payment"])
        #expect(sent(steps[4]) == ["orders.OrderCompleted.v1"])
        #expect(steps.allSatisfy { $0.ignoredBecause == nil })
        // The authorization carries the order's total, from the catalog's prices.
        guard case .send(let command) = steps[1].actions[0], let authorize = command as? AuthorizePayment else {
            Issue.record("no AuthorizePayment")
            return
        }
        #expect(authorize.amount == Money(amount: 2500, currency: "EUR"))
        #expect(authorize.orderID == "order-1")
    }

    @Test func outOfStockCancelsWithNothingToUndo() {
        let steps = run([.place, .stockUnavailable(reason: "out of stock: MUG-001")])
        #expect(steps[1].state == .cancelled)
        #expect(sent(steps[1]) == ["orders.OrderCancelled.v1"])
        #expect(steps[1].data.cancelReason == "out of stock: MUG-001")
    }

    @Test func declinedPaymentReleasesStockThenCancels() {
        let steps = run([.place, .stockReserved, .paymentDeclined(reason: "Your card was declined."), .reservationReleased])
        #expect(steps[2].state == .releasingStock)
        #expect(sent(steps[2]) == ["inventory.ReleaseReservation.v1", "timeout:releasing_stock"])
        #expect(steps[3].state == .cancelled)
        #expect(steps[3].data.cancelReason == "payment declined: Your card was declined.")
    }

    /// Runs timed inputs: each input at `now + seconds`.
    func run(_ inputs: [(Double, Checkout.Input)], saga: Checkout? = nil) -> [SagaTransition<Checkout.State, Checkout.Data>] {
        let saga = saga ?? self.saga
        var state = Checkout.initialState
        var current = data
        var out: [SagaTransition<Checkout.State, Checkout.Data>] = []
        for (seconds, input) in inputs {
            let next = saga.transition(from: state, data: current, on: input, now: now.addingTimeInterval(seconds))
            out.append(next)
            state = next.state
            current = next.data
        }
        return out
    }

    func scheduled(_ transition: SagaTransition<Checkout.State, Checkout.Data>) -> Duration? {
        for case .schedule(_, let after) in transition.actions { return after }
        return nil
    }

    @Test func paymentTimeoutVoidsWhateverWasAuthorizedThenReleasesAndCancels() {
        let steps = run([(0, .place), (1, .stockReserved), (302, .timeout("authorizing_payment")), (303, .paymentAuthorized),
                         (304, .paymentVoided), (305, .reservationReleased)])
        #expect(steps[2].state == .voidingPayment)
        #expect(sent(steps[2]) == ["payments.VoidPayment.v1", "timeout:voiding_payment"])
        // The authorization that comes late changes nothing: the void covers it.
        #expect(steps[3].ignoredBecause != nil)
        #expect(steps[3].state == .voidingPayment)
        #expect(steps[4].state == .releasingStock)
        #expect(steps[5].state == .cancelled)
        #expect(steps[5].data.cancelReason == "the payment was not authorized within 5m")
    }

    /// A step without an answer is sent again (10 s, 20 s, 40 s, then every minute) for as long as
    /// a restart, an outage or a retry tier can take; the saga gives up only after 5 minutes.
    @Test func aStepWithoutAnAnswerIsSentAgainLongBeforeTheSagaGivesUp() {
        var inputs: [(Double, Checkout.Input)] = [(0, .place)]
        var at = 0.0
        for delay in [10.0, 20, 40, 60, 60, 60, 50] {
            at += delay
            inputs.append((at, .timeout("reserving_stock")))
        }
        let steps = run(inputs)
        #expect(scheduled(steps[0]) == .seconds(10))
        for index in 1...6 {
            #expect(steps[index].state == .reservingStock, "gave up at send \(index)")
            #expect(sent(steps[index]).first == "inventory.ReserveStock.v1")
            #expect(steps[index].data.attempts == index)
        }
        #expect([2, 3, 4, 5, 6].map { scheduled(steps[$0]) } == [.seconds(40), .seconds(60), .seconds(60), .seconds(60), .seconds(50)])
        // At 5 minutes: give up and release whatever a late reservation holds.
        #expect(steps[7].state == .releasingStock)
        #expect(steps[7].data.cancelReason == "inventory did not answer within 5m")
    }

    /// After a database outage every pending timeout fires at once: each only sends its step again.
    @Test func aTimeoutFiredLateAfterAnOutageSendsAgainInsteadOfCancelling() {
        let steps = run([(0, .place), (1, .stockReserved), (61, .timeout("authorizing_payment")), (62, .paymentAuthorized),
                         (63, .reservationCommitted), (64, .paymentCaptured)])
        #expect(steps[2].state == .authorizingPayment)
        #expect(sent(steps[2]) == ["payments.AuthorizePayment.v1", "timeout:authorizing_payment"])
        #expect(steps.last?.state == .completed)
    }

    /// A capture that answers after the saga gave up on it completes the order: the stock is
    /// committed and the money taken.
    @Test func aLateCaptureFinishesTheSagaInsteadOfAVoid() {
        let steps = run([(0, .place), (1, .stockReserved), (2, .paymentAuthorized), (3, .reservationCommitted),
                         (400, .timeout("capturing_payment")), (401, .paymentCaptured)])
        #expect(steps[4].state == .voidingPayment)
        #expect(steps[5].state == .completed)
        #expect(sent(steps[5]) == ["orders.OrderCompleted.v1"])
        #expect(steps[5].data.cancelReason == nil)
    }

    /// A saga stored before `stateSince` was kept counts from its last change, and keeps counting
    /// across its resends: it still gives up.
    @Test func aSagaStoredBeforeStateSinceWasKeptStillGivesUp() {
        var old = data
        old.stateSince = nil
        old.updatedAt = now
        var state = Checkout.State.reservingStock
        var at = 0.0
        var gaveUp = false
        for _ in 0..<20 {
            at += 60
            let next = saga.transition(from: state, data: old, on: .timeout(state.rawValue), now: now.addingTimeInterval(at))
            (state, old) = (next.state, next.data)
            if state != .reservingStock { gaveUp = true; break }
        }
        #expect(gaveUp && at <= 360, "still resending after \(at) s")
    }

    /// While voiding, a late failure of another operation (the authorization that timed out fails
    /// after all) is not the void failing: the saga waits for the void's answer.
    @Test func aLateFailureOfAnotherOperationWhileVoidingIsNotAFailedVoid() {
        let steps = run([(0, .place), (1, .stockReserved), (302, .timeout("authorizing_payment")),
                         (303, .paymentFailed(operation: "authorize", reason: "the gateway is unavailable")), (304, .paymentVoided)])
        #expect(steps[3].state == .voidingPayment && steps[3].ignoredBecause != nil)
        #expect(steps[4].state == .releasingStock)
    }

    /// Replies that come after a compensation was parked still move the saga on.
    @Test func lateRepliesMoveAParkedSagaOn() {
        let steps = run([(0, .place), (1, .stockReserved), (302, .timeout("authorizing_payment")), (700, .timeout("voiding_payment")),
                         (701, .paymentVoided), (702, .reservationReleased)])
        #expect(steps[3].state == .compensationFailed)
        #expect(steps[3].data.failedStep == "voiding_payment")
        #expect(steps[4].state == .releasingStock)
        #expect(sent(steps[4]) == ["inventory.ReleaseReservation.v1", "timeout:releasing_stock"])
        #expect(steps[5].state == .cancelled)
        #expect(steps[5].data.failure == nil)
    }

    /// An operator's retry starts the compensation again where it stopped: a saga whose release
    /// failed (it never reached payment) releases again, and sends no void, which would replay an
    /// authorization for an order that never asked for one.
    @Test func anOperatorsRetryResumesTheCompensationThatFailed() {
        let steps = run([(0, .place), (301, .timeout("reserving_stock")), (700, .timeout("releasing_stock")), (800, .retryRequested)])
        #expect(steps[1].state == .releasingStock)
        #expect(steps[2].state == .compensationFailed)
        #expect(steps[3].state == .releasingStock)
        #expect(sent(steps[3]) == ["inventory.ReleaseReservation.v1", "timeout:releasing_stock"])
    }

    @Test func customerCancelBeforeCaptureUndoesWhatIsHeld() {
        // While the stock is being reserved: release (which also stops a late reservation).
        let early = run([.place, .cancelRequested(reason: "changed my mind")])
        #expect(early[1].state == .releasingStock)
        // After the authorization: void, then release.
        let late = run([.place, .stockReserved, .paymentAuthorized, .cancelRequested(reason: "changed my mind"), .paymentVoided, .reservationReleased])
        #expect(late[3].state == .voidingPayment)
        #expect(late[5].state == .cancelled)
        #expect(late[5].data.cancelReason == "changed my mind")
    }

    @Test func cancelDuringCaptureIsRejectedAndTheOrderCompletes() {
        let steps = run([.place, .stockReserved, .paymentAuthorized, .reservationCommitted, .cancelRequested(reason: "too late"), .paymentCaptured])
        #expect(steps[4].ignoredBecause != nil)
        #expect(sent(steps[4]) == ["orders.OrderCancellationRejected.v1"])
        #expect(steps[5].state == .completed)
    }

    @Test func aStepThatTimesOutIsSentAgainThenCompensated() {
        let steps = run([(0, .place), (1, .stockReserved), (2, .paymentAuthorized), (12, .timeout("committing_stock")),
                         (32, .timeout("committing_stock")), (303, .timeout("committing_stock"))])
        #expect(sent(steps[3]) == ["inventory.CommitReservation.v1", "timeout:committing_stock"])
        #expect(steps[3].state == .committingStock && steps[3].data.attempts == 1)
        #expect(steps[4].data.attempts == 2)
        // Five minutes without an answer: give back what is held.
        #expect(steps[5].state == .voidingPayment)
    }

    @Test func aCompensationThatKeepsFailingParksTheSagaUntilAnOperatorRetries() {
        let steps = run([(0, .place), (1, .stockReserved), (302, .timeout("authorizing_payment")),
                         (303, .paymentFailed(operation: "void", reason: "gateway refused")), (304, .retryRequested), (305, .paymentVoided),
                         (306, .reservationReleased)])
        #expect(steps[3].state == .compensationFailed)
        #expect(steps[3].data.failure?.contains("gateway refused") == true)
        #expect(steps[3].state.orderStatus == .cancelling)
        #expect(steps[4].state == .voidingPayment)
        #expect(steps[6].state == .cancelled)
    }

    @Test func staleTimeoutsAndEventsForFinishedSagasAreIgnored() {
        let steps = run([.place, .stockReserved, .timeout("reserving_stock")])
        #expect(steps[2].ignoredBecause != nil)
        #expect(steps[2].state == .authorizingPayment)
        let done = run([.place, .stockUnavailable(reason: "none"), .stockReserved, .retryRequested])
        #expect(done[2].ignoredBecause != nil && done[3].ignoredBecause != nil)
        #expect(done[3].actions.isEmpty)
    }

    @Test func everyStateHasACustomerStatusAndTheGraphNamesEveryState() {
        let graph = Checkout.mermaid()
        for state in Checkout.State.allCases {
            #expect(graph.contains(state.rawValue), "\(state) missing from the graph")
        }
        // Every status a customer can be shown is one some state of the saga gives.
        #expect(Set(Checkout.State.allCases.map(\.orderStatus)) == Set(OrderStatus.allCases))
        #expect(graph.hasPrefix("stateDiagram-v2"))
    }
}
