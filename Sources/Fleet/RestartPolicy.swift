/// When the supervisor starts a process again after it ended: the decision alone, free of clocks
/// and processes, so every case is tested without starting anything.
///
/// A process killed from outside (SIGKILL, SIGTERM, SIGINT, SIGHUP: an operator, the OOM killer,
/// a chaos test) is not crashing: it comes back after `afterKill`, however often that happens. A
/// process that ends by itself (an exit status, or a crash signal such as SIGSEGV or SIGABRT) soon
/// after it started is in a crash loop: each further such end doubles the delay, up to `maximum`.
/// One that ran for `stableAfter` before ending starts the count again.
public struct RestartPolicy: Sendable, Equatable {
    public var afterKill: Duration = .milliseconds(250)
    public var initial: Duration = .milliseconds(500)
    public var maximum: Duration = .seconds(5)
    public var stableAfter: Duration = .seconds(10)
    /// Crash-loop ends in a row so far.
    public private(set) var crashes = 0

    public init() {}

    /// Exit statuses as ``ClientRuntime/RunningProcess`` reports them: the code, or 128 + the signal.
    static let killedFromOutside: Set<Int32> = [128 + 9, 128 + 15, 128 + 2, 128 + 1]

    /// The delay before starting again a process that ended with `status` after running `ranFor`.
    public mutating func delay(afterExit status: Int32, ranFor: Duration) -> Duration {
        if ranFor >= stableAfter { crashes = 0 }
        if Self.killedFromOutside.contains(status) { return afterKill }
        crashes += 1
        var delay = initial
        for _ in 1..<crashes where delay < maximum { delay = delay * 2 }
        return min(delay, maximum)
    }

    /// What a status means, for logs: `killed by SIGKILL`, `exited with status 1`.
    public static func describe(_ status: Int32) -> String {
        guard status > 128 else { return "exited with status \(status)" }
        let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL",
                                      11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"]
        let signal = status - 128
        return "killed by \(names[signal] ?? "signal \(signal)")"
    }
}
