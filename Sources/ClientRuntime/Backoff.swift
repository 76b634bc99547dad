/// Exponential backoff with jitter, for reconnecting: 100 ms, 200 ms, 400 ms … up to `maximum`.
/// A value type so the retry decision can be tested without sleeping.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    public var multiplier: Double
    /// Share of each delay that is random (0 to 1), so a fleet does not reconnect in lockstep.
    public var jitter: Double
    public private(set) var attempt = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5),
                multiplier: Double = 2, jitter: Double = 0.2) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The delay before the next attempt.
    public mutating func next<R: RandomNumberGenerator>(using generator: inout R) -> Duration {
        let base = min(initial.seconds * pow(multiplier, Double(attempt)), maximum.seconds)
        attempt += 1
        let spread = base * jitter
        let value = spread > 0 ? base - spread + Double.random(in: 0...(2 * spread), using: &generator) : base
        return .nanoseconds(Int64(min(value, maximum.seconds) * 1e9))
    }

    public mutating func next() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return next(using: &generator)
    }

    public mutating func reset() { attempt = 0 }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }

    /// Whole milliseconds, clamped to what poll(2) takes.
    public var milliseconds: Int32 {
        let ms = seconds * 1000
        return ms >= Double(Int32.max) ? Int32.max : Int32(max(0, ms.rounded(.up)))
    }
}

#if canImport(Glibc)
import Glibc
#endif
