import AMQPClient
import ClientRuntime
import FoundationEssentials
@testable import Messaging
import PostgresClient
import ShopfleetTesting
import Testing

/// The relay, which publishes outbox rows their handler left behind (it died, its publish failed).
@Suite("Outbox relay")
struct OutboxRelayTests {
    /// A schema with the runtime's tables, a vhost with the fixture topology, and a relay over both.
    struct Setup {
        let sandbox: BrokerSandbox
        let schema: String
        let database: PostgresClient
        let amqp: AMQPConnection
        let relay: OutboxPublisher

        static func with(_ body: (Setup) async throws -> Void) async throws {
            let sandbox = try await BrokerSandbox.create()
            let schema = TestServers.uniqueName("relay")
            let database = PostgresClient(configuration: try PostgresConfiguration(url: try TestServers.databaseURL()), maximumConnections: 2)
            let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "relay test"))
            do {
                try await Migrator(client: database, schema: schema).migrate(RuntimeMigrations.all)
                let channel = try await amqp.openChannel()
                try await channel.enableConfirms()
                try await body(Setup(sandbox: sandbox, schema: schema, database: database, amqp: amqp,
                                     relay: OutboxPublisher(schema: schema, channel: channel, database: database)))
            } catch {
                await teardown(sandbox, schema, database, amqp)
                throw error
            }
            await teardown(sandbox, schema, database, amqp)
        }

        static func teardown(_ sandbox: BrokerSandbox, _ schema: String, _ database: PostgresClient, _ amqp: AMQPConnection) async {
            await amqp.close()
            _ = try? await database.query("DROP SCHEMA IF EXISTS \(quoteIdentifier(schema)) CASCADE")
            await database.close()
            await sandbox.remove()
        }

        /// An outbox row, as a handler's COMMIT writes it (created_at from the column's default).
        func insert(_ type: String, exchange: String, routingKey: String, on connection: PostgresConnection? = nil) async throws -> String {
            let id = UUIDv7.generate()
            let sql = """
                INSERT INTO \(quoteIdentifier(schema)).outbox (message_id, type, exchange, routing_key, body) VALUES ($1, $2, $3, $4, $5)
                """
            let binds: [any PostgresEncodable] = [id, type, exchange, routingKey, Data("{}".utf8)]
            if let connection { try await connection.query(sql, binds) } else { try await database.query(sql, binds) }
            return id
        }

        /// A published row is deleted (the broker confirmed it); an unpublished one stays.
        func published(_ id: String) async throws -> Bool {
            try await database.query("SELECT count(*) = 0 FROM \(quoteIdentifier(schema)).outbox WHERE message_id = $1", [id])[0]
                .decode(Bool.self, 0)
        }
    }

    /// A row the broker refuses (a command for a queue that does not exist) stays for the next
    /// pass; the rows beside it are published and deleted, not rolled back with it.
    @Test func aRowTheBrokerRefusesDoesNotHoldBackTheOthers() async throws {
        try await Setup.with { setup in
            let first = try await setup.insert("fixture.WorkDone.v1", exchange: "fixture.events", routingKey: "fixture.WorkDone.v1")
            let refused = try await setup.insert("fixture.Work.v1", exchange: "", routingKey: "no.such.queue")
            let last = try await setup.insert("fixture.Work.v1", exchange: "", routingKey: "fixture.commands")
            #expect(try await setup.relay.relay(grace: .zero) == 2)
            #expect(try await setup.published(first))
            #expect(try await setup.published(last))
            #expect(try await !setup.published(refused))
            // Every row refused: the pass says why.
            await #expect(throws: MessagingError.self) { _ = try await setup.relay.relay(grace: .zero) }
        }
    }

    /// A message sent writes one index entry in the outbox, its primary key's: runtime migration 5
    /// dropped the partial index of unpublished ids, which held the same entries again. (The index
    /// of rows an earlier version marked published is partial: an unpublished row has no entry.)
    /// The relay walks the primary key instead, oldest row first.
    @Test func anOutboxRowWritesOneIndexEntryAndTheRelayStillTakesTheOldestFirst() async throws {
        try await Setup.with { setup in
            let indexes = try await setup.database.query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'outbox' ORDER BY indexname", [setup.schema])
            #expect(try indexes.map { try $0.decode(String.self, 0) } == ["outbox_pkey", "outbox_published_at"])
            var ids: [String] = []
            for _ in 0..<3 {
                ids.append(try await setup.insert("fixture.WorkDone.v1", exchange: "fixture.events", routingKey: "fixture.WorkDone.v1"))
            }
            #expect(try await setup.relay.relay(grace: .zero, limit: 2) == 2)
            #expect(try await setup.published(ids[0]))
            #expect(try await setup.published(ids[1]))
            #expect(try await !setup.published(ids[2]))
            #expect(try await setup.relay.relay(grace: .zero, limit: 2) == 1)
            #expect(try await setup.published(ids[2]))
        }
    }

    /// A transaction's outbox rows go in one `INSERT` per 16 rows (37 rows: three statements
    /// with the COMMIT), every column as written, and each record learns its own row's id: the
    /// id the pipeline deletes once the broker confirmed that record's message.
    @Test func aTransactionsOutboxRowsGoInOneInsertPerSixteenAndEachRecordGetsItsOwnId() async throws {
        try await Setup.with { setup in
            var records = (0..<37).map { n in
                // Every optional column set on even rows, none on odd ones; bodies with the bytes
                // a text encoding could mangle.
                let envelope = Envelope(type: "fixture.Work.v1", correlationID: n % 2 == 0 ? "c-\(n)" : nil,
                                        causationID: n % 2 == 0 ? "cause-\(n)" : nil, sagaID: n % 2 == 0 ? "saga-\(n)" : nil,
                                        traceparent: n % 2 == 0 ? "00-\(n)-01" : nil, tracestate: n % 2 == 0 ? "k=\"v\"\\" : nil,
                                        replyTo: n % 2 == 0 ? "replies" : nil, body: [0, 34, 92, 123, UInt8(n), 255])
                return OutboxRecord(id: 0, envelope: envelope, exchange: n % 3 == 0 ? "" : "fixture.events", routingKey: "key-\(n)")
            }
            let statements = OutboxRecord.inserts(records, schema: setup.schema)
            #expect(statements.count == 3)
            let results = try await setup.database.transaction { tx in try await tx.commit(after: statements) }
            try OutboxRecord.assignIDs(&records, from: results)
            #expect(Set(records.map(\.id)).count == 37)
            let rows = try await setup.database.query(
                "SELECT \(OutboxRecord.columns) FROM \(quoteIdentifier(setup.schema)).outbox ORDER BY id")
            let stored = Dictionary(uniqueKeysWithValues: try rows.map { row in
                let record = try OutboxRecord(row: row)
                return (record.id, record)
            })
            #expect(stored.count == 37)
            for record in records {
                let row = try #require(stored[record.id])
                #expect(row.envelope.messageID == record.envelope.messageID)
                #expect(row.envelope.body == record.envelope.body)
                #expect(row.envelope.correlationID == record.envelope.correlationID)
                #expect(row.envelope.causationID == record.envelope.causationID)
                #expect(row.envelope.sagaID == record.envelope.sagaID)
                #expect(row.envelope.traceparent == record.envelope.traceparent)
                #expect(row.envelope.tracestate == record.envelope.tracestate)
                #expect(row.envelope.replyTo == record.envelope.replyTo)
                #expect(row.exchange == record.exchange)
                #expect(row.routingKey == record.routingKey)
            }

            // Ids read back in another order are refused, naming the message, rather than given
            // to the wrong records.
            let reversed = try await setup.database.query(
                "SELECT id, message_id FROM \(quoteIdentifier(setup.schema)).outbox ORDER BY id DESC")
            var again = records
            let refused = #expect(throws: MessagingError.self) { try OutboxRecord.assignIDs(&again, from: [reversed]) }
            #expect(refused?.description.contains(
                "returned message \(records[36].envelope.messageID) where \(records[0].envelope.messageID) was written") == true)
        }
    }

    /// The rows of a transaction that took long are young when it commits: the relay leaves them
    /// to their handler for the grace period, as it does any other's, instead of publishing them
    /// at the same time (their age used to count from the transaction's start).
    @Test func theRowsOfASlowTransactionAreYoungWhenItCommits() async throws {
        try await Setup.with { setup in
            let id = try await setup.database.transaction { tx -> String in
                try await tx.query("SELECT pg_sleep(1.5)")
                return try await setup.insert("fixture.Work.v1", exchange: "", routingKey: "fixture.commands", on: tx)
            }
            #expect(try await setup.relay.relay(grace: .seconds(1)) == 0)
            #expect(try await !setup.published(id))
            // Once the grace has passed, the relay takes it.
            try await waitUntil(deadline: .seconds(10)) { try await setup.relay.relay(grace: .seconds(1)) == 1 }
            #expect(try await setup.published(id))
        }
    }
}
