/// SplitMix64: a small generator whose numbers depend only on its seed, so that a seed names one
/// fault schedule and one set of orders on every machine.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `range`, from the next 53 bits: the same on every machine and Swift version
    /// (the standard library's `random(in:using:)` promises no particular algorithm).
    public mutating func uniform(_ range: ClosedRange<Double>) -> Double {
        range.lowerBound + (range.upperBound - range.lowerBound) * Double(next() >> 11) * 0x1p-53
    }

    /// A number in 0..<1.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// A whole number in `range`.
    public mutating func integer(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }

    /// One of `elements` (not empty).
    public mutating func pick<T>(_ elements: [T]) -> T { elements[integer(0...(elements.count - 1))] }

    /// A generator for one purpose (`faults`, order number 17), independent of the others drawn
    /// from the same seed: adding a fault does not change the orders.
    public static func stream(_ seed: UInt64, _ purpose: UInt64) -> SeededGenerator {
        var mixer = SeededGenerator(seed: seed ^ (purpose &* 0xD6E8_FEB8_6659_FD93))
        return SeededGenerator(seed: mixer.next())
    }
}

/// One fault of a run.
public enum Fault: Sendable, Equatable, Codable {
    /// SIGKILL a process of the fleet (the supervisor starts it again).
    case kill(process: String)
    /// SIGSTOP a process, SIGCONT it `seconds` later.
    case freeze(process: String, seconds: Double)
    /// Stop a server and start it again after `seconds` (0: at once).
    case restart(server: Server, downFor: Double)
    /// The payment gateway misbehaves for `seconds`.
    case gateway(ChaosScenario.GatewayFault)

    public enum Server: String, Sendable, Codable { case rabbitmq, postgres, redis }

    /// `kill orders-2`, `restart postgres (down 45 s)`.
    public var summary: String {
        switch self {
        case .kill(let process): return "kill \(process)"
        case .freeze(let process, let seconds): return "freeze \(process) for \(Self.format(seconds)) s"
        case .restart(let server, let down): return down > 0 ? "stop \(server.rawValue) for \(Self.format(down)) s" : "restart \(server.rawValue)"
        case .gateway(let fault):
            var parts: [String] = []
            if fault.latencyMilliseconds > 0 { parts.append("+\(fault.latencyMilliseconds) ms") }
            if fault.failureRate > 0 { parts.append("\(Int(fault.failureRate * 100)) % answered 500") }
            if fault.dropRate > 0 { parts.append("\(Int(fault.dropRate * 100)) % answers lost") }
            return "gateway \(parts.joined(separator: ", ")) for \(Self.format(fault.seconds)) s"
        }
    }

    /// The plot's marker category.
    public var kind: String {
        switch self {
        case .kill: return "kill"
        case .freeze: return "freeze"
        case .restart(let server, _): return server.rawValue
        case .gateway: return "gateway"
        }
    }

    public static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String((seconds * 10).rounded() / 10)
    }
}

/// A fault and when it starts, in seconds from the start of shopping.
public struct ScheduledFault: Sendable, Equatable, Codable {
    public var at: Double
    public var fault: Fault
    /// When it is over: a kill at once, a freeze or an outage after its length.
    public var until: Double {
        switch fault {
        case .kill: return at
        case .freeze(_, let seconds): return at + seconds
        case .restart(_, let down): return at + down
        case .gateway(let window): return at + window.seconds
        }
    }
}

/// The faults of a run, decided before it starts from the scenario, the seed and the fleet's
/// processes: the same seed and fleet give the same schedule.
public enum FaultSchedule {
    /// - Parameters:
    ///   - killable: the processes a kill may hit (workers and edges: not the gateway or the sink,
    ///     which stand for the world outside the fleet).
    ///   - freezable: the processes a freeze may hit (workers).
    public static func make(_ scenario: ChaosScenario, killable: [String], freezable: [String]) -> [ScheduledFault] {
        var faults: [ScheduledFault] = []
        let window = scenario.faultsFor.components.seconds
        if let every = scenario.killEvery, !killable.isEmpty {
            var random = SeededGenerator.stream(scenario.seed, 1)
            var at = random.uniform(every)
            while at < Double(window) {
                faults.append(ScheduledFault(at: at, fault: .kill(process: random.pick(killable))))
                at += random.uniform(every)
            }
        }
        var frozen = SeededGenerator.stream(scenario.seed, 2)
        for at in scenario.freezeAt where !freezable.isEmpty {
            faults.append(ScheduledFault(at: at, fault: .freeze(process: frozen.pick(freezable), seconds: scenario.freezeFor)))
        }
        faults += scenario.restartBrokerAt.map { ScheduledFault(at: $0, fault: .restart(server: .rabbitmq, downFor: 0)) }
        faults += scenario.restartDatabaseAt.map { ScheduledFault(at: $0, fault: .restart(server: .postgres, downFor: 0)) }
        if let outage = scenario.databaseOutage {
            faults.append(ScheduledFault(at: outage.at, fault: .restart(server: .postgres, downFor: outage.seconds)))
        }
        faults += scenario.restartRedisAt.map { ScheduledFault(at: $0, fault: .restart(server: .redis, downFor: 0)) }
        faults += scenario.gateway.map { ScheduledFault(at: $0.at, fault: .gateway($0)) }
        return faults.sorted { $0.at < $1.at }
    }
}
