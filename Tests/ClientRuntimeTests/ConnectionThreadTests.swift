@testable import ClientRuntime
import Synchronization
import Testing

@Suite("Connection thread")
struct ConnectionThreadTests {
    @Test func jobsRunInOrderOnTheThreadNotTheCaller() async throws {
        let thread = ConnectionThread(name: "test")
        defer { thread.stop() }
        let order = Mutex<[Int]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let onThread = try await thread.submit { thread.isCurrent }
                    #expect(onThread)
                    _ = try await thread.submit { order.withLock { $0.append(i) } }
                }
            }
            try await group.waitForAll()
        }
        #expect(order.withLock { $0.count } == 200)
        #expect(!thread.isCurrent)
        // Jobs queued from one caller run in the order queued.
        let sequence = Mutex<[Int]>([])
        for i in 0..<100 { thread.execute { sequence.withLock { $0.append(i) } } }
        try await thread.submit {}
        #expect(sequence.withLock { $0 } == Array(0..<100))
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
        let calls = Atomic<Int>(0)
        try await thread.submit {
            thread.setService { _ in
                calls.add(1, ordering: .relaxed)
                return .init(timeoutMilliseconds: 10)
            }
        }
        try await waitUntil(deadline: .seconds(5)) { calls.load(ordering: .relaxed) >= 5 }
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
        let opened = Atomic<Int>(0)
        let inUse = Atomic<Int>(0)
        let peak = Atomic<Int>(0)
        let pool = ConnectionPool<FakeConnection>(maximum: 3) {
            FakeConnection(id: opened.add(1, ordering: .relaxed).newValue)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<100 {
                group.addTask {
                    try await pool.withConnection { _ in
                        let now = inUse.add(1, ordering: .relaxed).newValue
                        peak.max(now, ordering: .relaxed)
                        try await Task.sleep(for: .milliseconds(1))
                        inUse.subtract(1, ordering: .relaxed)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(opened.load(ordering: .relaxed) <= 3)
        #expect(peak.load(ordering: .relaxed) <= 3)
        #expect(await pool.openCount <= 3)
    }

    @Test func brokenConnectionIsReplaced() async throws {
        let opened = Atomic<Int>(0)
        let pool = ConnectionPool<FakeConnection>(maximum: 1) {
            FakeConnection(id: opened.add(1, ordering: .relaxed).newValue)
        }
        let first = try await pool.withConnection { connection in
            connection.usable.store(false, ordering: .relaxed)
            return connection
        }
        #expect(first.closed.load(ordering: .relaxed))
        let second = try await pool.withConnection { $0.id }
        #expect(second == 2)
    }

    @Test func waitersTimeOutAndFactoryFailuresFreeTheirPlace() async throws {
        struct Down: Error {}
        let failing = Atomic<Bool>(true)
        let pool = ConnectionPool<FakeConnection>(maximum: 1, acquireTimeout: .milliseconds(100)) {
            if failing.load(ordering: .relaxed) { throw Down() }
            return FakeConnection(id: 1)
        }
        await #expect(throws: Down.self) { try await pool.withConnection { _ in } }
        #expect(await pool.openCount == 0)
        failing.store(false, ordering: .relaxed)
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
