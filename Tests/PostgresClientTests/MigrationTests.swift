@testable import PostgresClient
import Testing

@Suite("Migrations")
struct MigrationTests {
    let migrations = [
        Migration(version: 1, name: "create_items", sql: "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);"),
        Migration(version: 2, name: "add_price", sql: "ALTER TABLE items ADD COLUMN price bigint NOT NULL DEFAULT 0; CREATE INDEX ON items (name);"),
    ]

    @Test func appliesInOrderOnceAndRecords() async throws {
        let client = PostgresClient(configuration: try testConfiguration())
        let schema = uniqueName("mig")
        let migrator = Migrator(client: client, schema: schema)
        #expect(try await migrator.migrate(migrations) == [1, 2])
        #expect(try await migrator.migrate(migrations) == [])
        #expect(try await migrator.appliedVersions() == [1, 2])
        try await client.query("INSERT INTO \(schema).items (id, name, price) VALUES (1, 'a', 5)")
        try await client.query("DROP SCHEMA \(schema) CASCADE")
        await client.close()
    }

    @Test func failingMigrationLeavesNothingBehind() async throws {
        let client = PostgresClient(configuration: try testConfiguration())
        let schema = uniqueName("mig")
        let broken = migrations + [Migration(version: 3, name: "broken", sql: "CREATE TABLE half (id int); SELECT * FROM nope;")]
        let error = try await #require(throws: PostgresError.self) { try await Migrator(client: client, schema: schema).migrate(broken) }
        #expect(error.sqlState == "42P01")
        #expect(try await Migrator(client: client, schema: schema).appliedVersions() == [1, 2])
        let half = try await client.query("SELECT to_regclass($1)::text", "\(schema).half")
        #expect(try half.first?.decode(String?.self, 0) == nil)
        try await client.query("DROP SCHEMA \(schema) CASCADE")
        await client.close()
    }

    @Test func changedAppliedMigrationIsAnError() async throws {
        let client = PostgresClient(configuration: try testConfiguration())
        let schema = uniqueName("mig")
        try await Migrator(client: client, schema: schema).migrate(migrations)
        var changed = migrations
        changed[0].sql += " -- edited"
        let error = try await #require(throws: PostgresError.self) { try await Migrator(client: client, schema: schema).migrate(changed) }
        #expect(error.code == .migration)
        #expect(error.message.contains("changed after it was applied"))
        try await client.query("DROP SCHEMA \(schema) CASCADE")
        await client.close()
    }

    @Test func concurrentProcessesApplyEachMigrationOnce() async throws {
        let schema = uniqueName("mig")
        let config = try testConfiguration()
        // Separate clients stand for separate processes starting at once.
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let client = PostgresClient(configuration: config, maximumConnections: 1)
                    defer { Task { await client.close() } }
                    return try await Migrator(client: client, schema: schema).migrate(migrations)
                }
            }
            var all: [Int] = []
            for try await versions in group { all += versions }
            return all.sorted()
        }
        #expect(applied == [1, 2])
        let client = PostgresClient(configuration: config)
        try await client.query("DROP SCHEMA \(schema) CASCADE")
        await client.close()
    }

    @Test func duplicateVersionsAreRejected() throws {
        let duplicate = migrations + [Migration(version: 2, name: "again", sql: "")]
        #expect(throws: PostgresError.self) { try Migration.ordered(duplicate) }
    }
}
