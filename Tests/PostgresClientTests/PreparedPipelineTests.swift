@testable import PostgresClient
import Testing

/// Statements prepared once per connection, a transaction's BEGIN sent with its first statement,
/// and `commit(after:)` sending the last statements with the COMMIT: all in fewer round trips, and
/// none of it may change what a statement does or how a failure is reported.
@Suite("PostgreSQL prepared statements and pipelined transactions")
struct PreparedPipelineTests {
    /// The statements this connection has prepared, as the server lists them.
    func prepared(_ connection: PostgresConnection) async throws -> [String] {
        try await connection.query("SELECT statement FROM pg_prepared_statements ORDER BY name").map { try $0.decode(String.self, 0) }
    }

    @Test(arguments: Driving.allCases) func aStatementIsPreparedOnceAndRunByName(driving: Driving) async throws {
        let connection = try await connect(try testConfiguration(), driving)
        let sql = "SELECT $1::int * 2"
        for n in 1...3 {
            #expect(try await connection.query(sql, n).first?.decode(Int.self, 0) == n * 2)
        }
        let listed = try await prepared(connection)
        #expect(listed.filter { $0 == sql }.count == 1)
        // A statement with no parameters and NULL parameters go the same way.
        #expect(try await connection.query("SELECT $1::text IS NULL", [String?.none]).first?.decode(Bool.self, 0) == true)
        await connection.close()
    }

    @Test(arguments: Driving.allCases) func statementCacheZeroPreparesNothing(driving: Driving) async throws {
        var configuration = try testConfiguration()
        configuration.statementCacheSize = 0
        let connection = try await connect(configuration, driving)
        #expect(try await connection.query("SELECT $1::int + 1", 41).first?.decode(Int.self, 0) == 42)
        let inTransaction = try await connection.transaction { tx in
            try await tx.query("SELECT $1::int + 1", 1).first?.decode(Int.self, 0)
        }
        #expect(inTransaction == 2)
        #expect(try await prepared(connection).isEmpty)
        await connection.close()
        // From the URL too, and a bad value is named.
        let url = "postgres://u@localhost:5432/db?statement_cache=0"
        #expect(try PostgresConfiguration(url: url).statementCacheSize == 0)
        let error = try #require(throws: PostgresError.self) {
            try PostgresConfiguration(url: "postgres://u@localhost:5432/db?statement_cache=lots")
        }
        #expect(error.message.contains("statement_cache"))
    }

    @Test(arguments: Driving.allCases) func aTableChangedUnderACachedPlanIsPreparedAgain(driving: Driving) async throws {
        let connection = try await connect(try testConfiguration(), driving)
        let table = uniqueName("replan")
        try await connection.query("CREATE TABLE \(table) (a int)")
        try await connection.query("INSERT INTO \(table) VALUES (1)")
        let sql = "SELECT * FROM \(table) WHERE a = $1"
        #expect(try await connection.query(sql, 1).columns == ["a"])
        try await connection.query("ALTER TABLE \(table) ADD COLUMN b text DEFAULT 'x'")
        // The cached plan's result type changed: outside a transaction the client prepares again.
        let rows = try await connection.query(sql, 1)
        #expect(rows.columns == ["a", "b"])
        #expect(try rows.first?.decode(String.self, "b") == "x")
        try await connection.query("DROP TABLE \(table)")
        await connection.close()
    }

    @Test(arguments: Driving.allCases) func commitAfterSendsTheLastStatementsWithTheCommit(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 1)
        let table = uniqueName("commit_after")
        try await client.query("CREATE TABLE \(table) (id serial PRIMARY KEY, note text UNIQUE)")
        let ids = try await client.transaction { tx -> [Int] in
            try await tx.query("INSERT INTO \(table) (note) VALUES ($1)", "first")
            let rows = try await tx.commit(after: [
                PostgresStatement("INSERT INTO \(table) (note) VALUES ($1) RETURNING id", ["second"]),
                PostgresStatement("INSERT INTO \(table) (note) VALUES ($1) RETURNING id", ["third"]),
            ])
            return try rows.map { try #require($0.first).decode(Int.self, 0) }
        }
        #expect(ids == [2, 3])
        #expect(try await client.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, 0) == 3)

        // One failing statement in the final round trip: nothing of the transaction commits, the
        // error names it, and the pooled connection is usable afterwards.
        let error = try await #require(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) (note) VALUES ($1)", "fourth")
                try await tx.commit(after: [PostgresStatement("INSERT INTO \(table) (note) VALUES ($1)", ["first"])])
            }
        }
        #expect(error.sqlState == "23505")
        #expect(try await client.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, 0) == 3)

        // A statement after the commit would run outside the transaction: refused.
        let misuse = try await #require(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.commit(after: [PostgresStatement("INSERT INTO \(table) (note) VALUES ($1)", ["fifth"])])
                try await tx.query("INSERT INTO \(table) (note) VALUES ($1)", "sixth")
            }
        }
        #expect(misuse.code == .usage)
        let notes = try await client.query("SELECT note FROM \(table) ORDER BY id").map { try $0.decode(String.self, 0) }
        #expect(notes == ["first", "second", "third", "fifth"])

        // A transaction that sent nothing commits nothing, and the next one works as usual.
        _ = try await client.transaction { tx in try await tx.commit(after: []) }
        _ = try await client.transaction { tx in try await tx.query("INSERT INTO \(table) (note) VALUES ($1)", "seventh") }
        #expect(try await client.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, 0) == 5)
        try await client.query("DROP TABLE \(table)")
        await client.close()
    }

    @Test(arguments: Driving.allCases) func aFailedFirstStatementRollsBackAndACommitOfAFailedTransactionIsAnError(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 1)
        let table = uniqueName("begin_pipe")
        try await client.query("CREATE TABLE \(table) (id int PRIMARY KEY)")
        // The first statement goes with BEGIN; its error is the one reported.
        let first = try await #require(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) VALUES ($1::int)", "not a number")
            }
        }
        #expect(first.sqlState == "22P02")
        // A failure the body swallowed leaves the transaction aborted: its COMMIT is an error,
        // never a silent rollback.
        let swallowed = try await #require(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) VALUES (1)")
                _ = try? await tx.query("INSERT INTO \(table) VALUES (1)")
                try await tx.commit(after: [])
            }
        }
        #expect(swallowed.sqlState == "25P02")
        #expect(try await client.query("SELECT count(*) FROM \(table)").first?.decode(Int.self, 0) == 0)
        try await client.query("DROP TABLE \(table)")
        await client.close()
    }

    @Test(arguments: Driving.allCases) func aStatementSentWithTheNextOneGetsItsOwnResult(driving: Driving) async throws {
        let client = makeClient(try testConfiguration(), driving, maximumConnections: 1)
        let table = uniqueName("with_next")
        try await client.query("CREATE TABLE \(table) (id int PRIMARY KEY)")
        // Sent with the next statement: its rows arrive with that statement's.
        let seen = try await client.transaction { tx -> Int in
            let first = try tx.sendWithNext(PostgresStatement("INSERT INTO \(table) VALUES ($1) RETURNING id", [1]))
            #expect(first.result == nil)
            try await tx.query("INSERT INTO \(table) VALUES (2)")
            return try #require(try first.result?.get().first).decode(Int.self, 0)
        }
        #expect(seen == 1)
        // Sent with the COMMIT when no statement follows.
        let withCommit = try await client.transaction { tx -> PostgresPendingResult in
            try tx.sendWithNext(PostgresStatement("INSERT INTO \(table) VALUES ($1)", [3]))
        }
        #expect(withCommit.result.map { (try? $0.get())?.affectedRows } == 1)
        // When it fails, the statement it went with throws its error, that statement never ran,
        // and the whole transaction rolls back.
        let error = try await #require(throws: PostgresError.self) {
            try await client.transaction { tx in
                try await tx.query("INSERT INTO \(table) VALUES (4)")
                let duplicate = try tx.sendWithNext(PostgresStatement("INSERT INTO \(table) VALUES ($1)", [1]))
                do {
                    try await tx.query("INSERT INTO \(table) VALUES (5)")
                } catch {
                    guard case .failure(let failure)? = duplicate.result else { throw error }
                    #expect(failure.sqlState == "23505")
                    throw error
                }
            }
        }
        #expect(error.sqlState == "23505")
        let ids = try await client.query("SELECT id FROM \(table) ORDER BY id").map { try $0.decode(Int.self, 0) }
        #expect(ids == [1, 2, 3])
        // Outside a transaction there is no next round trip to join.
        let outside = try await client.withConnection { connection in
            try #require(throws: PostgresError.self) { try connection.sendWithNext(PostgresStatement("SELECT 1")) }
        }
        #expect(outside.code == .usage)
        let commitOutside = try await client.withConnection { connection in
            try await #require(throws: PostgresError.self) { try await connection.commit(after: []) }
        }
        #expect(commitOutside.code == .usage)
        // The connection is none the worse for it.
        #expect(try await client.query("SELECT 1").first?.decode(Int.self, 0) == 1)
        try await client.query("DROP TABLE \(table)")
        await client.close()
    }
}
