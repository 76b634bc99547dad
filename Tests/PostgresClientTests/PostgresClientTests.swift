import FoundationEssentials
@testable import PostgresClient
import Testing
import ClientRuntime

@Suite("PostgreSQL client against a real server")
struct PostgresClientTests {
    @Test(arguments: Driving.allCases) func decodesEveryTypeItSupports(driving: Driving) async throws {
        let connection = try await connect(testConfiguration(), driving)
        defer { Task { await connection.close() } }
        let id = UUID()
        let when = Date(timeIntervalSince1970: 1_764_000_000.123456)
        let rows = try await connection.query(
            """
            SELECT $1::text AS t, $2::int AS i, $3::bigint AS b, $4::bool AS flag, $5::uuid AS id,
                   $6::timestamptz AS at, $7::numeric AS price, $8::jsonb AS doc, $9::bytea AS raw,
                   $10::text[] AS tags, $11::bigint[] AS numbers, NULL::text AS missing
            """,
            ["héllo, \"world\"", 42, Int64.max, true, id, when, Decimal(string: "12345.6789")!,
             PostgresJSON(["a": 1]), Data([0, 1, 254, 255]), ["x", "y z", "q\"uote", "back\\slash"], [Int64(1), -2]])
        let row = try #require(rows.first)
        #expect(try row.decode(String.self, "t") == "héllo, \"world\"")
        #expect(try row.decode(Int32.self, "i") == 42)
        #expect(try row.decode(Int64.self, "b") == Int64.max)
        #expect(try row.decode(Bool.self, "flag") == true)
        #expect(try row.decode(UUID.self, "id") == id)
        let decodedDate = try row.decode(Date.self, "at")
        #expect(abs(decodedDate.timeIntervalSince1970 - when.timeIntervalSince1970) < 0.000002)
        #expect(try row.decode(Decimal.self, "price") == Decimal(string: "12345.6789")!)
        #expect(try row.decode(PostgresJSON<[String: Int]>.self, "doc").value == ["a": 1])
        #expect(try row.decode(Data.self, "raw") == Data([0, 1, 254, 255]))
        #expect(try row.decode([String].self, "tags") == ["x", "y z", "q\"uote", "back\\slash"])
        #expect(try row.decode([Int64].self, "numbers") == [1, -2])
        #expect(try row.decode(String?.self, "missing") == nil)
        // A NULL into a non-optional is a decoding error naming the column.
        let error = try #require(throws: PostgresError.self) { try row.decode(String.self, "missing") }
        #expect(error.code == .decoding)
        #expect(error.message.contains("missing"))
        // Wrong type names the column and value.
        let wrong = try #require(throws: PostgresError.self) { try row.decode(Int.self, "t") }
        #expect(wrong.message.contains("'t'"))
    }

    @Test(arguments: Driving.allCases) func sqlErrorCarriesSQLStateAndConnectionStaysUsable(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 1)
        let error = try await #require(throws: PostgresError.self) {
            try await client.query("SELECT * FROM table_that_does_not_exist")
        }
        #expect(error.code == .server)
        #expect(error.sqlState == "42P01")
        #expect(error.message.contains("table_that_does_not_exist"))
        #expect(error.description.contains("SQLSTATE 42P01"))
        // The only pooled connection is still good.
        let rows = try await client.query("SELECT 1 + 1")
        #expect(try rows.first?.decode(Int.self, 0) == 2)
        #expect(await client.openConnections == 1)
        await client.close()
    }

    @Test(arguments: Driving.allCases) func transactionRollsBackWhenBodyThrows(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 2)
        let table = uniqueName("tx")
        try await client.query("CREATE TABLE \(table) (id int PRIMARY KEY, note text)")
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) VALUES (1, 'rolled back')")
                throw Boom()
            }
        }
        try await client.transaction { tx in
            try await tx.query("INSERT INTO \(table) VALUES ($1, $2)", 2, "kept")
        }
        // A failed statement inside a transaction rolls the whole thing back too.
        await #expect(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) VALUES (3, 'x')")
                try await tx.query("INSERT INTO \(table) VALUES (3, 'duplicate')")
            }
        }
        let ids = try await client.query("SELECT id FROM \(table) ORDER BY id").map { try $0.decode(Int.self, 0) }
        #expect(ids == [2])
        try await client.query("DROP TABLE \(table)")
        await client.close()
    }

    @Test(arguments: Driving.allCases) func poolIsBoundedAndTimesOut(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 2, acquireTimeout: .milliseconds(300))
        // Two callers hold both connections in a sleep; a third waits, then times out.
        async let a: Void = client.withConnection { try await $0.query("SELECT pg_sleep(1.5)") }
        async let b: Void = client.withConnection { try await $0.query("SELECT pg_sleep(1.5)") }
        try await waitUntil(deadline: .seconds(5)) { await client.openConnections == 2 }
        let error = try await #require(throws: PostgresError.self) {
            try await client.query("SELECT 1")
        }
        #expect(error.code == .poolTimeout)
        _ = try await (a, b)
        #expect(await client.openConnections == 2)
        // Many concurrent callers share the two connections.
        try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<50 {
                group.addTask { try await client.query("SELECT $1::int", i).first!.decode(Int.self, 0) }
            }
            var sum = 0
            for try await value in group { sum += value }
            #expect(sum == (0..<50).reduce(0, +))
        }
        #expect(await client.openConnections <= 2)
        await client.close()
    }

    @Test func listenReceivesNotifications() async throws {
        let channel = uniqueName("chan")
        let listener = try await PostgresListener.start(try testConfiguration(), channels: [channel])
        let client = PostgresClient(configuration: try testConfiguration())
        try await client.withConnection { try await $0.notify(channel: channel, payload: "hello") }
        let events = listener.events
        let event = try await withDeadline(.seconds(10)) { await events.first { _ in true } }
        #expect(event == .notification(channel: channel, payload: "hello"))
        await listener.close()
        await client.close()
    }

    @Test func listenerSurvivesTerminatedConnection() async throws {
        let channel = uniqueName("chan")
        let config = try testConfiguration()
        let tagged = PostgresConfiguration(host: config.host, port: config.port, user: config.user,
                                           password: config.password, database: config.database,
                                           applicationName: channel)
        let listener = try await PostgresListener.start(tagged, channels: [channel])
        let client = PostgresClient(configuration: config)
        // Kill the listener's backend as an operator (or a failover) would.
        try await client.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", channel)
        let events = listener.events
        // Notify once the listener says it is back; the notification must arrive.
        let (sawReconnect, received) = try await withDeadline(.seconds(20)) { () -> (Bool, Bool) in
            var sawReconnect = false
            for await event in events {
                switch event {
                case .reconnected:
                    sawReconnect = true
                    try await client.withConnection { try await $0.notify(channel: channel, payload: "after") }
                case .notification(_, let payload) where payload == "after":
                    return (sawReconnect, true)
                default:
                    continue
                }
            }
            return (sawReconnect, false)
        }
        #expect(sawReconnect)
        #expect(received)
        await listener.close()
        await client.close()
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        var config = try testConfiguration()
        config.password = "definitely-not-the-password"
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(config)
        }
        #expect(error.code == .authenticationFailed)
        #expect(!error.description.contains("definitely-not-the-password"))
    }

    @Test func serverNotRunningNamesHostAndPortWithinDeadline() async throws {
        var config = try testConfiguration()
        config.port = 1  // nothing listens there
        let start = ContinuousClock.now
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PostgresConnection.connect(config)
        }
        #expect(error.code == .connectionFailed)
        #expect(error.description.contains("\(config.host):1"))
        #expect(ContinuousClock.now - start < .seconds(10))
    }
}
