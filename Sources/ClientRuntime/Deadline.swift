/// `body` did not finish within its deadline.
public struct DeadlineExceeded: Error, CustomStringConvertible, Equatable {
    public var after: Duration
    public init(after: Duration) { self.after = after }
    public var description: String { "no result within \(after)" }
}

/// Runs `body`, cancelling it and throwing ``DeadlineExceeded`` if it takes longer than `timeout`.
public func withDeadline<T: Sendable>(
    _ timeout: Duration, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw DeadlineExceeded(after: timeout)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Waits until `condition` holds, checking every `interval`; throws ``DeadlineExceeded`` when it
/// still does not after `deadline`. For tests and readiness checks: never sleep-and-hope.
public func waitUntil(
    deadline: Duration, interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async throws {
    let end = ContinuousClock.now + deadline
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= end { throw DeadlineExceeded(after: deadline) }
        try await Task.sleep(for: interval)
    }
}
