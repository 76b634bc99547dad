import ClientRuntime
import FoundationEssentials
@testable import PostgresClient
import Synchronization
import Testing

/// Connections driven without blocking by a thread they share (a worker's AMQP thread, in the
/// fleet). What they do is tested both ways in the other suites; these are about the sharing.
@Suite("PostgreSQL connections on a shared thread")
struct SharedThreadTests {
    /// The statement waits for an advisory lock the test holds, so it is still at the server for
    /// as long as the test wants: a job given to the thread meanwhile must run, whatever the speed
    /// of the machine. A thread blocked on the statement would run it only after the release.
    @Test func theSharedThreadGoesOnWhileAStatementRuns() async throws {
        let thread = ConnectionThread(name: "test: shared")
        let connection = try await PostgresConnection.connect(try testConfiguration(), on: thread)
        let admin = try await PostgresConnection.connect(try testConfiguration())
        let lock = Int.random(in: 1...Int(Int32.max))
        try await admin.query("SELECT pg_advisory_lock($1::bigint)", lock)
        async let slow = connection.query("SELECT pg_advisory_lock($1::bigint), 7", lock)
        try await waitUntil(deadline: .seconds(5), interval: .milliseconds(5)) {
            (try? await admin.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = $1::bigint AND NOT granted", lock))
                .flatMap { try? $0.first?.decode(Int.self, 0) } == 1
        }
        let ran = Mutex(false)
        let job = Task { try await thread.submit { ran.withLock { $0 = true } } }
        let ranWhileWaiting = (try? await waitUntil(deadline: .seconds(5), interval: .milliseconds(5)) { ran.withLock { $0 } }) != nil
        let stillWaiting = try await admin.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = $1::bigint AND NOT granted", lock)
            .first?.decode(Int.self, 0)
        try await admin.query("SELECT pg_advisory_unlock($1::bigint)", lock)
        #expect(ranWhileWaiting, "a job given to the thread did not run while its connection's statement waited")
        #expect(stillWaiting == 1)
        try await job.value
        #expect(try await slow.first?.decode(Int.self, 1) == 7)
        await admin.close()
        await connection.close()
        thread.stop()
    }

    @Test func callersOfOneConnectionTakeTurns() async throws {
        let thread = ConnectionThread(name: "test: shared")
        let connection = try await PostgresConnection.connect(try testConfiguration(), on: thread)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                group.addTask {
                    let tripled = try await connection.query("SELECT $1::int * 3", i).first?.decode(Int.self, 0)
                    #expect(tripled == i * 3)
                }
            }
            try await group.waitForAll()
        }
        await connection.close()
        thread.stop()
    }

    @Test func largeStatementsAndResultsCrossInPieces() async throws {
        let thread = ConnectionThread(name: "test: shared")
        let connection = try await PostgresConnection.connect(try testConfiguration(), on: thread)
        // 8 MB in: more than a socket takes at once, so the thread finishes sending when it can.
        let blob = Data((0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let echoed = try await connection.query("SELECT length($1::bytea), md5($1::bytea) = md5($2::bytea)", blob, blob)
        #expect(try echoed.first?.decode(Int.self, 0) == blob.count)
        #expect(try echoed.first?.decode(Bool.self, 1) == true)
        // 200 000 rows out: many reads.
        let rows = try await connection.query("SELECT g, repeat('x', 50) FROM generate_series(1, 200000) g")
        #expect(rows.count == 200_000)
        #expect(try rows.map { try $0.decode(Int.self, 0) }.last == 200_000)
        await connection.close()
        thread.stop()
    }

    @Test func aTerminatedBackendFailsItsStatementAndThePoolReplacesIt() async throws {
        let thread = ConnectionThread(name: "test: shared")
        let name = uniqueName("shared-kill")
        var configuration = try testConfiguration()
        configuration.applicationName = name
        let client = PostgresClient(configuration: configuration, maximumConnections: 1, on: thread)
        let admin = PostgresClient(configuration: try testConfiguration(), maximumConnections: 1)
        #expect(try await client.query("SELECT 1").first?.decode(Int.self, 0) == 1)
        let doomed = Task { try await client.query("SELECT pg_sleep(30)") }
        try await waitUntil(deadline: .seconds(5)) {
            (try? await admin.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'", name))
                .flatMap { try? $0.first?.decode(Int.self, 0) } == 1
        }
        try await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", name)
        let error = try await #require(throws: PostgresError.self) { _ = try await doomed.value }
        #expect(error.code == .connectionLost || error.code == .server)
        // The broken connection is dropped on its way back; the next caller gets a new one.
        #expect(try await client.query("SELECT 2").first?.decode(Int.self, 0) == 2)
        await client.close()
        await admin.close()
        thread.stop()
    }
}
