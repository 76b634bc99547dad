/// What a chaos run does: how many customers order how much, on how many replicas, and which
/// faults hit the fleet meanwhile. A value, with two presets (`ci`, `long`) that every flag of
/// `shopfleet chaos run` can change.
public struct ChaosScenario: Sendable, Equatable, Codable {
    public var name: String
    /// The same seed gives the same fault schedule and the same orders.
    public var seed: UInt64
    /// Orders the customers place in all.
    public var orders: Int
    /// Customers shopping at once (each its own account and cart, one order at a time).
    public var customers: Int
    /// Processes per role (`FleetPlan.replicas(parsing:)`).
    public var replicas: String
    /// How long faults are injected, from the first order on. Orders are spread over this window.
    public var faultsFor: Duration

    /// A random process of the fleet (every worker role, the edge) is SIGKILLed every
    /// `killEvery` (a random time between the two bounds); nil: no kills.
    public var killEvery: ClosedRange<Double>?
    /// SIGSTOP a random worker at these times for `freezeFor` (longer than the AMQP heartbeat),
    /// then SIGCONT: a frozen pod.
    public var freezeAt: [Double]
    public var freezeFor: Double
    /// Restart RabbitMQ at these times (seconds from the start of shopping).
    public var restartBrokerAt: [Double]
    /// Restart PostgreSQL at these times (stop, then start at once).
    public var restartDatabaseAt: [Double]
    /// A PostgreSQL outage: down at `at` for `seconds` (longer than the saga's resend interval).
    public var databaseOutage: Outage?
    /// Restart Redis at these times.
    public var restartRedisAt: [Double]
    /// Windows in which the payment gateway misbehaves.
    public var gateway: [GatewayFault]
    /// The AMQP heartbeat of the fleet's connections: a frozen process is dropped by the broker
    /// after about two of them.
    public var heartbeatSeconds: Int

    public struct Outage: Sendable, Equatable, Codable {
        public var at: Double
        public var seconds: Double
        public init(at: Double, seconds: Double) {
            self.at = at
            self.seconds = seconds
        }
    }

    public struct GatewayFault: Sendable, Equatable, Codable {
        public var at: Double
        public var seconds: Double
        public var latencyMilliseconds: Int = 0
        /// Share of requests answered 500.
        public var failureRate: Double = 0
        /// Share of requests handled whose answer is lost.
        public var dropRate: Double = 0
        public init(at: Double, seconds: Double, latencyMilliseconds: Int = 0, failureRate: Double = 0, dropRate: Double = 0) {
            self.at = at
            self.seconds = seconds
            self.latencyMilliseconds = latencyMilliseconds
            self.failureRate = failureRate
            self.dropRate = dropRate
        }
    }

    /// What `make test` runs on every CI run: about 200 orders, two replicas of every process,
    /// a kill every 1–2 s for 30 s, one broker restart, one PostgreSQL restart, a gateway that
    /// fails a third of its calls for a while.
    public static let ci = ChaosScenario(
        name: "ci", seed: 1, orders: 200, customers: 16, replicas: "2", faultsFor: .seconds(30), killEvery: 1...2,
        freezeAt: [], freezeFor: 12, restartBrokerAt: [8], restartDatabaseAt: [19], databaseOutage: nil, restartRedisAt: [],
        gateway: [GatewayFault(at: 13, seconds: 4, failureRate: 0.3)], heartbeatSeconds: 5)

    /// The long scenario of `docs/chaos.md`: 2,000 orders, a kill every 2 s, a broker restart, a
    /// 45 s PostgreSQL outage, a Redis restart, two frozen workers, gateway latency, errors and
    /// lost answers.
    public static let long = ChaosScenario(
        name: "long", seed: 1, orders: 2000, customers: 40, replicas: "2", faultsFor: .seconds(150), killEvery: 2...2,
        freezeAt: [40, 115], freezeFor: 15, restartBrokerAt: [25], restartDatabaseAt: [], databaseOutage: Outage(at: 60, seconds: 45),
        restartRedisAt: [130],
        gateway: [GatewayFault(at: 15, seconds: 10, latencyMilliseconds: 2000), GatewayFault(at: 110, seconds: 10, failureRate: 0.3),
                  GatewayFault(at: 138, seconds: 10, dropRate: 0.2)],
        heartbeatSeconds: 5)

    public static let presets = ["ci": ci, "long": long]

    public init(name: String, seed: UInt64, orders: Int, customers: Int, replicas: String, faultsFor: Duration,
                killEvery: ClosedRange<Double>?, freezeAt: [Double], freezeFor: Double, restartBrokerAt: [Double],
                restartDatabaseAt: [Double], databaseOutage: Outage?, restartRedisAt: [Double], gateway: [GatewayFault],
                heartbeatSeconds: Int) {
        self.name = name
        self.seed = seed
        self.orders = orders
        self.customers = customers
        self.replicas = replicas
        self.faultsFor = faultsFor
        self.killEvery = killEvery
        self.freezeAt = freezeAt
        self.freezeFor = freezeFor
        self.restartBrokerAt = restartBrokerAt
        self.restartDatabaseAt = restartDatabaseAt
        self.databaseOutage = databaseOutage
        self.restartRedisAt = restartRedisAt
        self.gateway = gateway
        self.heartbeatSeconds = heartbeatSeconds
    }
}

/// A value of a scenario flag that cannot be used, and why.
public struct ScenarioError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ChaosScenario {
    /// `1.5`, `1.5s`, `500ms`, `2m`: seconds.
    public static func seconds(_ text: String) throws -> Double {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value >= 0 { return value * factor }
        }
        if let value = Double(text), value >= 0 { return value }
        throw ScenarioError("'\(text)' is not a duration such as 500ms, 2s or 1m")
    }

    /// `2s` or `1s-2s`: a range of seconds.
    public static func range(_ text: String) throws -> ClosedRange<Double> {
        let parts = text.split(separator: "-", maxSplits: 1).map(String.init)
        let low = try seconds(parts[0])
        let high = parts.count == 2 ? try seconds(parts[1]) : low
        guard low > 0, high >= low else { throw ScenarioError("'\(text)' must be a positive duration, or two with the second not shorter") }
        return low...high
    }

    /// `10s,40s`: times in seconds; empty for `none`.
    public static func times(_ text: String) throws -> [Double] {
        text == "none" || text.isEmpty ? [] : try text.split(separator: ",").map { try seconds(String($0)) }
    }
}
