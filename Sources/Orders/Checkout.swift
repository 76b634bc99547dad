public import Contracts
public import FoundationEssentials
public import Messaging
public import Sagas

/// The checkout saga: place → reserve stock → authorize payment → commit the reservation
/// (order confirmed) → capture → completed. Failures compensate in reverse: void the payment,
/// release the stock, cancel the order. Pure: every decision is made here from the state, the
/// data and the input, and tested without a server.
public struct Checkout: SagaDefinition {
    public enum State: String, CaseIterable, Hashable, Sendable {
        case placed
        case reservingStock = "reserving_stock"
        case authorizingPayment = "authorizing_payment"
        case committingStock = "committing_stock"
        case capturingPayment = "capturing_payment"
        case completed
        case voidingPayment = "voiding_payment"
        case releasingStock = "releasing_stock"
        case cancelled
        case compensationFailed = "compensation_failed"

        /// What the customer sees.
        public var orderStatus: OrderStatus {
            switch self {
            case .placed, .reservingStock, .authorizingPayment, .committingStock: return .pending
            case .capturingPayment: return .confirmed
            case .completed: return .completed
            case .voidingPayment, .releasingStock, .compensationFailed: return .cancelling
            case .cancelled: return .cancelled
            }
        }
    }

    public struct Data: Codable, Sendable, Equatable {
        public var orderID: String
        public var customerID: String
        public var customerEmail: String
        public var lines: [OrderLine]
        public var total: Money
        public var paymentMethod: String
        public var placedAt: Date
        /// Why the order is being (or was) cancelled.
        public var cancelReason: String?
        /// Why compensation stopped, when it did.
        public var failure: String?
        /// Times the current step was sent again (its timeout fired without an answer).
        public var attempts: Int = 0
        /// When the saga entered its current state: a step gives up this long after it began,
        /// however often it was sent again meanwhile. (Nil in sagas stored before it was kept.)
        public var stateSince: Date?
        /// Whether inventory confirmed the commit: stock left the shelf for this order.
        public var stockCommitted: Bool?
        /// The compensation step that failed, when the saga is `compensation_failed`: where an
        /// operator's retry starts again. (Nil in sagas stored before it was kept: from the payment.)
        public var failedStep: String?
        public var updatedAt: Date

        public init(orderID: String, customerID: String, customerEmail: String, lines: [OrderLine], total: Money,
                    paymentMethod: String, placedAt: Date) {
            self.orderID = orderID
            self.customerID = customerID
            self.customerEmail = customerEmail
            self.lines = lines
            self.total = total
            self.paymentMethod = paymentMethod
            self.placedAt = placedAt
            self.updatedAt = placedAt
        }
    }

    public enum Input: SagaInput, Equatable {
        case place
        case stockReserved
        case stockUnavailable(reason: String)
        case reservationCommitted
        case reservationCommitFailed(reason: String)
        case reservationReleased
        case paymentAuthorized
        case paymentDeclined(reason: String)
        case paymentCaptured
        case paymentVoided
        case paymentFailed(operation: String, reason: String)
        case timeout(String)
        case cancelRequested(reason: String)
        case retryRequested

        public var name: String {
            switch self {
            case .place: return "place"
            case .stockReserved: return "stock-reserved"
            case .stockUnavailable: return "stock-unavailable"
            case .reservationCommitted: return "reservation-committed"
            case .reservationCommitFailed: return "reservation-commit-failed"
            case .reservationReleased: return "reservation-released"
            case .paymentAuthorized: return "payment-authorized"
            case .paymentDeclined: return "payment-declined"
            case .paymentCaptured: return "payment-captured"
            case .paymentVoided: return "payment-voided"
            case .paymentFailed(let operation, _): return "payment-\(operation)-failed"
            case .timeout(let name): return "timeout \(name)"
            case .cancelRequested: return "cancel-requested"
            case .retryRequested: return "retry-requested"
            }
        }

        public var timeoutName: String? {
            if case .timeout(let name) = self { return name }
            return nil
        }
    }

    /// When a step is sent again, and when the saga gives up on it. Every handler is idempotent,
    /// so a step with no answer is sent again early and often; giving up (and compensating) is for
    /// a dependency that is really gone, not for a restart, a database outage or a message waiting
    /// in a retry tier (tiers reach 2 minutes). A reply that comes after the saga gave up can still
    /// finish or unwind it.
    public struct Timing: Sendable, Equatable {
        /// A step with no answer is sent again after this, then after twice as long each time, up
        /// to `resendLimit` between sends.
        public var resend: Duration = .seconds(10)
        public var resendLimit: Duration = .seconds(60)
        /// Waiting for inventory to answer a reservation before cancelling the order.
        public var reserve: Duration = .seconds(300)
        /// Waiting for the gateway before voiding whatever it authorizes and cancelling.
        public var payment: Duration = .seconds(300)
        /// Every other step (commit, capture, void, release) before compensating, or, for a
        /// compensation, parking the saga in `compensation_failed` for an operator.
        public var step: Duration = .seconds(300)
        /// How long inventory holds the stock; longer than the steps up to the commit.
        public var reservationTTL: Duration = .seconds(900)
        public init() {}

        /// How long `state` waits in all before the saga gives up on it.
        func giveUp(_ state: State) -> Duration? {
            switch state {
            case .reservingStock: return reserve
            case .authorizingPayment: return payment
            case .committingStock, .capturingPayment, .voidingPayment, .releasingStock: return step
            case .placed, .completed, .cancelled, .compensationFailed: return nil
            }
        }

        /// The wait before sending a step again after it was sent `sent` times.
        func resendDelay(afterSending sent: Int) -> Duration {
            var delay = resend
            for _ in 1..<max(1, sent) where delay < resendLimit { delay = delay * 2 }
            return min(delay, resendLimit)
        }
    }

    public static let name = "checkout"
    public static let initialState = State.placed
    public static let terminalStates: Set<State> = [.completed, .cancelled]

    public var timing: Timing
    public init(timing: Timing = Timing()) { self.timing = timing }

    public func labels(of data: Data) -> [String: String] { ["customer": data.customerID, "order": data.orderID] }

    public func transition(from state: State, data: Data, on input: Input, now: Date) -> SagaTransition<State, Data> {
        var data = data
        // Sagas stored before `stateSince` was kept count from their last change.
        let since = data.stateSince ?? data.updatedAt
        data.updatedAt = now

        func move(_ to: State, _ actions: [SagaAction] = []) -> SagaTransition<State, Data> {
            if to != state {
                data.attempts = 0
                data.stateSince = now
            }
            var actions = actions
            if let wait = timing.giveUp(to) {
                actions.append(.schedule(timeout: to.rawValue, after: min(timing.resendDelay(afterSending: data.attempts + 1), wait)))
            }
            return SagaTransition(state: to, data: data, actions: actions)
        }
        func ignore(_ reason: String, _ actions: [SagaAction] = []) -> SagaTransition<State, Data> {
            .ignore(state, data, because: reason, actions: actions)
        }
        /// Starts undoing: whatever is held is given back, in reverse order.
        func compensate(_ reason: String, paymentHeld: Bool) -> SagaTransition<State, Data> {
            data.cancelReason = data.cancelReason ?? reason
            return paymentHeld ? move(.voidingPayment, [voidPayment(data)]) : move(.releasingStock, [releaseStock(data)])
        }
        /// Parks the saga for an operator, remembering where its compensation stopped.
        func park(_ failure: String) -> SagaTransition<State, Data> {
            data.failure = failure
            data.failedStep = state.rawValue
            return move(.compensationFailed)
        }
        func summary(_ status: State, reason: String? = nil) -> OrderSummary {
            Self.summary(data, status: status.orderStatus, reason: reason)
        }

        if Self.terminalStates.contains(state) {
            return ignore("the saga is \(state.rawValue)")
        }
        switch (state, input) {
        case (.placed, .place):
            return move(.reservingStock, [
                .publish(OrderPlaced(order: summary(.reservingStock))),
                .send(ReserveStock(reservationID: data.orderID, lines: data.lines.map { StockLine(sku: $0.sku, quantity: $0.quantity) },
                                   ttlSeconds: Int(timing.reservationTTL.components.seconds))),
            ])

        case (.reservingStock, .stockReserved):
            return move(.authorizingPayment, [authorize(data)])
        case (.reservingStock, .stockUnavailable(let reason)):
            data.cancelReason = reason
            return move(.cancelled, [.publish(OrderCancelled(order: summary(.cancelled, reason: reason), reason: reason))])
        case (.reservingStock, .cancelRequested(let reason)):
            return compensate(reason, paymentHeld: false)

        case (.authorizingPayment, .paymentAuthorized):
            return move(.committingStock, [.send(CommitReservation(reservationID: data.orderID))])
        case (.authorizingPayment, .paymentDeclined(let reason)):
            return compensate("payment declined: \(reason)", paymentHeld: false)
        case (.authorizingPayment, .paymentFailed(_, let reason)):
            return compensate("payment failed: \(reason)", paymentHeld: true)
        case (.authorizingPayment, .cancelRequested(let reason)):
            return compensate(reason, paymentHeld: true)

        case (.committingStock, .reservationCommitted):
            data.stockCommitted = true
            return move(.capturingPayment, [
                .publish(OrderConfirmed(order: summary(.capturingPayment))),
                .send(CapturePayment(orderID: data.orderID)),
            ])
        case (.committingStock, .reservationCommitFailed(let reason)):
            return compensate("the stock could not be committed: \(reason)", paymentHeld: true)
        case (.committingStock, .cancelRequested(let reason)):
            return compensate(reason, paymentHeld: true)

        case (.capturingPayment, .paymentCaptured):
            return move(.completed, [.publish(OrderCompleted(order: summary(.completed)))])
        case (.capturingPayment, .paymentFailed(_, let reason)):
            return compensate("the payment could not be captured: \(reason)", paymentHeld: true)
        case (.capturingPayment, .cancelRequested):
            return ignore("the payment is being captured", [
                .publish(OrderCancellationRejected(orderID: data.orderID, reason: "the payment is already being captured")),
            ])

        // A capture that answers after the saga gave up on it: the stock is gone and the money
        // taken, so the order is complete; the void on its way finds the payment captured.
        case (.voidingPayment, .paymentCaptured) where data.stockCommitted == true,
             (.compensationFailed, .paymentCaptured) where data.stockCommitted == true:
            data.failure = nil
            data.failedStep = nil
            data.cancelReason = nil
            return move(.completed, [.publish(OrderCompleted(order: summary(.completed)))])

        case (.voidingPayment, .paymentVoided):
            return move(.releasingStock, [releaseStock(data)])
        case (.voidingPayment, .paymentFailed(let operation, let reason)) where operation == "void":
            return park("the payment could not be voided: \(reason)")

        case (.releasingStock, .reservationReleased):
            let reason = data.cancelReason ?? "cancelled"
            return move(.cancelled, [.publish(OrderCancelled(order: summary(.cancelled, reason: reason), reason: reason))])

        // Replies that come after the saga parked itself still move it on.
        case (.compensationFailed, .paymentVoided) where data.failedStep != State.releasingStock.rawValue:
            data.failure = nil
            data.failedStep = nil
            return move(.releasingStock, [releaseStock(data)])
        case (.compensationFailed, .reservationReleased) where data.failedStep == State.releasingStock.rawValue:
            data.failure = nil
            data.failedStep = nil
            let reason = data.cancelReason ?? "cancelled"
            return move(.cancelled, [.publish(OrderCancelled(order: summary(.cancelled, reason: reason), reason: reason))])

        case (.compensationFailed, .retryRequested):
            // An operator fixed the cause: start the compensation again where it stopped.
            data.failure = nil
            let step = data.failedStep.flatMap(State.init(rawValue:)) ?? .voidingPayment
            data.failedStep = nil
            return step == .releasingStock ? move(.releasingStock, [releaseStock(data)]) : move(.voidingPayment, [voidPayment(data)])

        case (_, .retryRequested):
            guard let resend = currentCommand(state, data) else { return ignore("nothing to send again in \(state.rawValue)") }
            data.attempts = 0
            data.stateSince = now
            return move(state, [resend])

        case (_, .timeout(let name)) where name == state.rawValue:
            guard let resend = currentCommand(state, data), let wait = timing.giveUp(state) else {
                return ignore("no step to repeat in \(state.rawValue)")
            }
            let waited = Duration.seconds(max(0, now.timeIntervalSince(since)))
            if waited >= wait {
                let said = "\(state.rawValue): no answer within \(Self.describe(wait)), sent \(data.attempts + 1) times"
                switch state {
                case .reservingStock: return compensate("inventory did not answer within \(Self.describe(wait))", paymentHeld: false)
                case .authorizingPayment: return compensate("the payment was not authorized within \(Self.describe(wait))", paymentHeld: true)
                case .voidingPayment, .releasingStock: return park(said)
                default: return compensate(said, paymentHeld: true)
                }
            }
            data.attempts += 1
            data.stateSince = since
            var transition = SagaTransition(state: state, data: data, actions: [resend])
            transition.actions.append(.schedule(timeout: state.rawValue,
                                                after: min(timing.resendDelay(afterSending: data.attempts + 1), wait - waited)))
            return transition

        case (.voidingPayment, .cancelRequested), (.releasingStock, .cancelRequested), (.compensationFailed, .cancelRequested):
            return ignore("the order is already being cancelled")

        default:
            return ignore("\(input.name) does not apply in \(state.rawValue)")
        }
    }

    /// `5m`, `30s`, `1.5s`: how the saga names a wait in reasons and logs.
    static func describe(_ duration: Duration) -> String {
        let seconds = duration.components.seconds
        let fraction = duration.components.attoseconds
        if fraction == 0, seconds >= 60, seconds % 60 == 0 { return "\(seconds / 60)m" }
        if fraction == 0 { return "\(seconds)s" }
        return "\(Double(seconds) + Double(fraction) / 1e18)s"
    }

    /// The command a waiting state waits on, to send again on a timeout or an operator's retry.
    func currentCommand(_ state: State, _ data: Data) -> SagaAction? {
        switch state {
        case .reservingStock:
            return .send(ReserveStock(reservationID: data.orderID, lines: data.lines.map { StockLine(sku: $0.sku, quantity: $0.quantity) },
                                      ttlSeconds: Int(timing.reservationTTL.components.seconds)))
        case .authorizingPayment: return authorize(data)
        case .committingStock: return .send(CommitReservation(reservationID: data.orderID))
        case .capturingPayment: return .send(CapturePayment(orderID: data.orderID))
        case .voidingPayment: return voidPayment(data)
        case .releasingStock: return releaseStock(data)
        case .placed, .completed, .cancelled, .compensationFailed: return nil
        }
    }

    private func authorize(_ data: Data) -> SagaAction {
        .send(AuthorizePayment(orderID: data.orderID, amount: data.total, paymentMethod: data.paymentMethod))
    }

    private func voidPayment(_ data: Data) -> SagaAction {
        .send(VoidPayment(orderID: data.orderID, reason: data.cancelReason ?? "cancelled", amount: data.total, paymentMethod: data.paymentMethod))
    }

    private func releaseStock(_ data: Data) -> SagaAction {
        .send(ReleaseReservation(reservationID: data.orderID, reason: data.cancelReason ?? "cancelled"))
    }

    static func summary(_ data: Data, status: OrderStatus, reason: String?) -> OrderSummary {
        OrderSummary(orderID: data.orderID, customerID: data.customerID, customerEmail: data.customerEmail, status: status.rawValue,
                     statusReason: reason ?? data.cancelReason, lines: data.lines, total: data.total,
                     placedAt: data.placedAt.formatted(.iso8601), updatedAt: data.updatedAt.formatted(.iso8601))
    }

    public static let edges: [SagaEdge<State>] = [
        .init(.placed, "place", .reservingStock),
        .init(.reservingStock, "stock-reserved", .authorizingPayment),
        .init(.reservingStock, "stock-unavailable", .cancelled),
        .init(.reservingStock, "timeout / cancel", .releasingStock),
        .init(.authorizingPayment, "payment-authorized", .committingStock),
        .init(.authorizingPayment, "payment-declined", .releasingStock),
        .init(.authorizingPayment, "timeout / failed / cancel", .voidingPayment),
        .init(.committingStock, "reservation-committed", .capturingPayment),
        .init(.committingStock, "commit-failed / cancel / given up", .voidingPayment),
        .init(.capturingPayment, "payment-captured", .completed),
        .init(.capturingPayment, "capture-failed / given up", .voidingPayment),
        .init(.voidingPayment, "payment-voided", .releasingStock),
        .init(.voidingPayment, "payment-captured (late, stock committed)", .completed),
        .init(.voidingPayment, "void-failed / given up", .compensationFailed),
        .init(.releasingStock, "reservation-released", .cancelled),
        .init(.releasingStock, "given up", .compensationFailed),
        .init(.compensationFailed, "retry (operator), the void had failed", .voidingPayment),
        .init(.compensationFailed, "retry (operator), the release had failed / payment-voided (late)", .releasingStock),
        .init(.compensationFailed, "reservation-released (late)", .cancelled),
        .init(.compensationFailed, "payment-captured (late, stock committed)", .completed),
    ]
}
