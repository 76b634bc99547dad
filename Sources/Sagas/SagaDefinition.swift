public import FoundationEssentials
public import Messaging

/// A saga's logic, free of I/O: given its state, its data and what happened, say where it goes and
/// what to send. The engine (``SagaEngine``) loads, locks, applies and logs; the definition only
/// decides, so every path can be tested without a server.
public protocol SagaDefinition: Sendable {
    associatedtype State: RawRepresentable<String> & CaseIterable & Hashable & Sendable
    associatedtype Data: Codable & Sendable
    associatedtype Input: SagaInput

    /// The saga's type name, stored with every instance (`checkout`).
    static var name: String { get }
    /// States in which nothing more happens.
    static var terminalStates: Set<State> { get }
    /// The state a saga is in before its first transition.
    static var initialState: State { get }

    func transition(from state: State, data: Data, on input: Input, now: Date) -> SagaTransition<State, Data>

    /// Labels stored beside the saga for finding it (`customer`).
    func labels(of data: Data) -> [String: String]

    /// Every edge of the state machine, for `shopfleet saga graph`.
    static var edges: [SagaEdge<State>] { get }
}

/// What happened to a saga: an event received, a timeout, an operator's request.
public protocol SagaInput: Sendable {
    /// Short and stable, for the step log and the graph (`stock-reserved`, `timeout`).
    var name: String { get }
    /// The timeout this input is, if it is one (its name).
    var timeoutName: String? { get }
    /// The input for a fired timeout.
    static func timeout(_ name: String) -> Self
}

/// The decision for one input.
public struct SagaTransition<State: Sendable, Data: Sendable>: Sendable {
    public var state: State
    public var data: Data
    public var actions: [SagaAction]
    /// Set when the input does not apply in this state (a late or repeated event): nothing changes
    /// and the step log says why.
    public var ignoredBecause: String?

    public init(state: State, data: Data, actions: [SagaAction] = []) {
        self.state = state
        self.data = data
        self.actions = actions
    }

    public static func ignore(_ state: State, _ data: Data, because reason: String, actions: [SagaAction] = []) -> Self {
        var transition = Self(state: state, data: data, actions: actions)
        transition.ignoredBecause = reason
        return transition
    }
}

/// What a transition asks the engine to do, in the same transaction as the new state.
public enum SagaAction: Sendable {
    /// Send a command (through the outbox), carrying the saga id.
    case send(any Command)
    /// Publish an event (through the outbox), carrying the saga id.
    case publish(any Event)
    /// Fire `name` after `after` unless the saga moves on first. A saga has at most one pending
    /// timeout: a transition to another state drops the one before.
    case schedule(timeout: String, after: Duration)
}

public struct SagaEdge<State: Sendable>: Sendable {
    public var from: State
    public var on: String
    public var to: State
    public init(_ from: State, _ on: String, _ to: State) {
        self.from = from
        self.on = on
        self.to = to
    }
}

extension SagaDefinition {
    /// The definition as a Mermaid state diagram.
    public static func mermaid() -> String {
        var lines = ["stateDiagram-v2", "    [*] --> \(initialState.rawValue)"]
        for edge in edges {
            lines.append("    \(edge.from.rawValue) --> \(edge.to.rawValue): \(edge.on)")
        }
        for state in State.allCases where terminalStates.contains(state) {
            lines.append("    \(state.rawValue) --> [*]")
        }
        return lines.joined(separator: "\n")
    }
}
