/// A connection a ``ConnectionPool`` can hand out.
public protocol PooledConnection: AnyObject, Sendable {
    /// False once the connection is broken; the pool then closes it instead of reusing it.
    var isUsable: Bool { get }
    func close() async
}

public struct ConnectionPoolError: Error, CustomStringConvertible, Equatable {
    public enum Reason: Sendable, Equatable { case timedOut, closed }
    public var reason: Reason
    public var maximum: Int
    public var waited: Duration

    public var description: String {
        switch reason {
        case .timedOut:
            return "no connection free within \(waited) (all \(maximum) in use)"
        case .closed:
            return "the connection pool is closed"
        }
    }
}

/// A bounded pool: at most `maximum` connections, opened lazily; callers wait for a free one up to
/// `acquireTimeout`. A connection that reports itself broken is closed on release and its place
/// given to the next caller, so a server that comes back is picked up without a restart.
public actor ConnectionPool<Connection: PooledConnection> {
    public typealias Factory = @Sendable () async throws -> Connection

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Connection?, any Error>
    }

    public nonisolated let maximum: Int
    public nonisolated let acquireTimeout: Duration
    private let factory: Factory
    private var idle: [Connection] = []
    private var open = 0
    private var waiters: [Waiter] = []
    private var nextWaiterID: UInt64 = 0
    private var closed = false

    public init(maximum: Int, acquireTimeout: Duration = .seconds(10), factory: @escaping Factory) {
        precondition(maximum > 0, "a pool needs room for at least one connection")
        self.maximum = maximum
        self.acquireTimeout = acquireTimeout
        self.factory = factory
    }

    /// Runs `body` with a connection of the pool and gives it back afterwards, also when `body` throws.
    public nonisolated func withConnection<T: Sendable>(
        _ body: (Connection) async throws -> T
    ) async throws -> T {
        let connection = try await acquire()
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    /// Connections open now (idle and in use).
    public var openCount: Int { open }
    public var idleCount: Int { idle.count }

    public func acquire() async throws -> Connection {
        if closed { throw ConnectionPoolError(reason: .closed, maximum: maximum, waited: .zero) }
        while let candidate = idle.popLast() {
            if candidate.isUsable { return candidate }
            open -= 1
            await candidate.close()
        }
        if open < maximum {
            return try await openOne()
        }
        let id = nextWaiterID
        nextWaiterID += 1
        let timeout = acquireTimeout
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(waiter: id)
        }
        defer { timer.cancel() }
        let handed = try await withCheckedThrowingContinuation { continuation in
            waiters.append(Waiter(id: id, continuation: continuation))
        }
        if let handed { return handed }
        // A place came free: open a connection in it.
        return try await openOne()
    }

    public func release(_ connection: Connection) async {
        if closed || !connection.isUsable {
            open -= 1
            await connection.close()
            if !closed, !waiters.isEmpty {
                // The place is free again: let the first waiter open a new connection in it.
                open += 1
                waiters.removeFirst().continuation.resume(returning: nil)
            }
            return
        }
        if !waiters.isEmpty {
            waiters.removeFirst().continuation.resume(returning: connection)
        } else {
            idle.append(connection)
        }
    }

    /// Closes idle connections now and the others as they come back; waiters fail.
    public func close() async {
        closed = true
        for waiter in waiters {
            waiter.continuation.resume(throwing: ConnectionPoolError(reason: .closed, maximum: maximum, waited: .zero))
        }
        waiters.removeAll()
        let toClose = idle
        idle.removeAll()
        open -= toClose.count
        for connection in toClose { await connection.close() }
    }

    private func openOne() async throws -> Connection {
        open += 1
        do {
            return try await factory()
        } catch {
            open -= 1
            if !waiters.isEmpty {
                // Our place is free again for whoever waits.
                open += 1
                waiters.removeFirst().continuation.resume(returning: nil)
            }
            throw error
        }
    }

    private func expire(waiter id: UInt64) {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { return }
        let waiter = waiters.remove(at: index)
        waiter.continuation.resume(
            throwing: ConnectionPoolError(reason: .timedOut, maximum: maximum, waited: acquireTimeout))
    }
}
