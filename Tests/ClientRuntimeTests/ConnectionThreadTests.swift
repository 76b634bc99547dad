@testable import ClientRuntime
import Synchronization
import Testing

/// Shared mutable state for tests' concurrent closures.
final class Recorder: Sendable {
    let values = Mutex<[Int]>([])
    func append(_ value: Int) { values.withLock { $0.append(value) } }
    var all: [Int] { values.withLock { $0 } }
}

@Suite("Connection thread")
struct ConnectionThreadTests {
    @Test func jobsRunInOrderOnTheThreadNotTheCaller() async throws {
        let thread = ConnectionThread(name: "test")
        defer { thread.stop() }
        let order = Recorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let onThread = try await thread.submit { thread.isCurrent }
                    #expect(onThread)
                    _ = try await thread.submit { order.append(i) }
                }
            }
            try await group.waitForAll()
        }
        #expect(order.all.count == 200)
        #expect(!thread.isCurrent)
        // Jobs queued from one caller run in the order queued.
        let sequence = Recorder()
        for i in 0..<100 { thread.execute { sequence.append(i) } }
        try await thread.submit {}
        #expect(sequence.all == Array(0..<100))
    }

    @Test func errorsComeBackToTheCaller() async throws {
        struct Boom: Error {}
        let thread = ConnectionThread(name: "test")
        defer { thread.stop() }
        await #expect(throws: Boom.self) { try await thread.submit { throw Boom() } }
        #expect(try await thread.submit { 41 + 1 } == 42)
    }

    @Test func serviceIsCalledOnTimeoutAndStopRefusesNewJobs() async throws {
        let thread = ConnectionThread(name: "test")
        let calls = Recorder()
        try await thread.submit {
            thread.setService { _ in
                calls.append(1)
                return .init(timeoutMilliseconds: 10)
            }
        }
        try await waitUntil(deadline: .seconds(5)) { calls.all.count >= 5 }
        thread.stop()
        try await waitUntil(deadline: .seconds(5)) { !thread.execute {} }
        await #expect(throws: ConnectionThreadStopped.self) { try await thread.submit { 1 } }
    }
}

@Suite("Connection pool")
struct ConnectionPoolTests {
    final class FakeConnection: PooledConnection {
        let id: Int
        let usable = Atomic<Bool>(true)
        let closed = Atomic<Bool>(false)
        init(id: Int) { self.id = id }
        var isUsable: Bool { usable.load(ordering: .relaxed) }
        func close() async { closed.store(true, ordering: .relaxed) }
    }

    @Test func neverOpensMoreThanMaximumAndReusesConnections() async throws {
        let counters = Counters()
        let pool = ConnectionPool<FakeConnection>(maximum: 3) {
            FakeConnection(id: counters.opened.add(1, ordering: .relaxed).newValue)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<100 {
                group.addTask {
                    try await pool.withConnection { _ in
                        let now = counters.inUse.add(1, ordering: .relaxed).newValue
                        counters.peak.max(now, ordering: .relaxed)
                        try await Task.sleep(for: .milliseconds(1))
                        counters.inUse.subtract(1, ordering: .relaxed)
                    }
                }
            }
            try await group.waitForAll()
        }
        let opened = counters.opened.load(ordering: .relaxed)
        let peak = counters.peak.load(ordering: .relaxed)
        #expect(opened <= 3)
        #expect(peak <= 3)
        #expect(await pool.openCount <= 3)
    }

    final class Counters: Sendable {
        let opened = Atomic<Int>(0)
        let inUse = Atomic<Int>(0)
        let peak = Atomic<Int>(0)
        let failing = Atomic<Bool>(true)
    }

    @Test func brokenConnectionIsReplaced() async throws {
        let counters = Counters()
        let pool = ConnectionPool<FakeConnection>(maximum: 1) {
            FakeConnection(id: counters.opened.add(1, ordering: .relaxed).newValue)
        }
        let first = try await pool.withConnection { connection in
            connection.usable.store(false, ordering: .relaxed)
            return connection
        }
        let firstClosed = first.closed.load(ordering: .relaxed)
        #expect(firstClosed)
        let second = try await pool.withConnection { $0.id }
        #expect(second == 2)
    }

    @Test func waitersTimeOutAndFactoryFailuresFreeTheirPlace() async throws {
        struct Down: Error {}
        let counters = Counters()
        let pool = ConnectionPool<FakeConnection>(maximum: 1, acquireTimeout: .milliseconds(100)) {
            if counters.failing.load(ordering: .relaxed) { throw Down() }
            return FakeConnection(id: 1)
        }
        await #expect(throws: Down.self) { try await pool.withConnection { _ in } }
        #expect(await pool.openCount == 0)
        counters.failing.store(false, ordering: .relaxed)
        let held = try await pool.acquire()
        let error = try await #require(throws: ConnectionPoolError.self) { try await pool.acquire() }
        #expect(error.reason == .timedOut)
        await pool.release(held)
        #expect(try await pool.withConnection { $0.id } == 1)
    }
}

@Suite("Backoff and URLs")
struct BackoffAndURLTests {
    @Test func backoffGrowsToItsMaximumAndResets() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1), multiplier: 2, jitter: 0)
        let delays = (0..<6).map { _ in backoff.next() }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
        backoff.reset()
        #expect(backoff.next() == .milliseconds(100))
        var jittered = Backoff(initial: .seconds(1), maximum: .seconds(10), jitter: 0.2)
        let d = jittered.next()
        #expect(d >= .milliseconds(800) && d <= .milliseconds(1200))
    }

    @Test func parsesAndRedactsURLs() throws {
        let url = try ServerURL("postgres://app:s%3Acret@db.example:6543/orders?application_name=x", schemes: ["postgres"])
        #expect(url.user == "app")
        #expect(url.password == "s:cret")
        #expect(url.host == "db.example")
        #expect(url.port == 6543)
        #expect(url.path == "orders")
        #expect(url.queryValue("application_name") == "x")
        #expect(ServerURL.redact("amqp://u:secret@h:1/v") == "amqp://u:***@h:1/v")
        #expect(ServerURL.redact("redis://h:1/0") == "redis://h:1/0")
        let ipv6 = try ServerURL("redis://[::1]:6380/2", schemes: ["redis"])
        #expect(ipv6.host == "::1")
        #expect(ipv6.port == 6380)
        let error = try #require(throws: ServerURL.ParseError.self) { try ServerURL("amqp://u:secret@h:notaport", schemes: ["amqp"]) }
        #expect(!error.description.contains("secret"))
        #expect(throws: ServerURL.ParseError.self) { try ServerURL("mysql://h", schemes: ["postgres"]) }
    }
}

@Suite("Connection thread as a task executor")
struct ConnectionThreadExecutorTests {
    @Test func pinnedTaskRunsOnTheThreadAndSubmitsInline() async throws {
        let thread = ConnectionThread(name: "pinned")
        let (onThread, inline) = try await withTaskExecutorPreference(thread) {
            let before = thread.isCurrent
            // Runs inline: the same thread, no handover.
            let inside = try await thread.submit { thread.isCurrent }
            try await Task.sleep(for: .milliseconds(1))  // resumes on the thread again
            return (before && thread.isCurrent, inside)
        }
        #expect(onThread)
        #expect(inline)
        #expect(!thread.isCurrent)
        thread.stop()
    }

    @Test func pinnedTaskOutlivesItsStoppedThread() async throws {
        let thread = ConnectionThread(name: "short-lived")
        let finished = try await withTaskExecutorPreference(thread) {
            thread.stop()
            // Resumed after the stop: the global pool runs the rest.
            try await Task.sleep(for: .milliseconds(20))
            return !thread.isCurrent
        }
        #expect(finished)
    }
}
