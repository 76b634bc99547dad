import AMQPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import Orders
import PaymentsSandbox
import PostgresClient
import Sagas
import ShopfleetTesting
import Testing

/// The saga row holds its pending timeout (orders migration 130): sagas stored before keep theirs;
/// an input the saga ignores leaves it; a timeout that fires, even one the saga ignores, is gone;
/// one a replica of the version before wrote to `saga_timeouts` still fires.
@Suite("Saga storage", .serialized)
struct SagaStorageTests {
    @Test func theMigrationMovesEachPendingTimeoutIntoItsSagaRow() async throws {
        let scratch = try await ScratchDatabase.create("sagarow")
        let database = PostgresClient(configuration: try PostgresConfiguration(url: scratch.url), maximumConnections: 1)
        do {
            let migrator = Migrator(client: database, schema: "orders")
            let all = try RuntimeMigrations.with(OrdersService.migrations)
            _ = try await migrator.migrate(all.filter { $0.version < 130 })
            for statement in [
                "INSERT INTO orders.sagas (id, saga_type, state, data) VALUES ('waiting', 'checkout', 'authorizing_payment', '{}')",
                "INSERT INTO orders.sagas (id, saga_type, state, data, terminal) VALUES ('done', 'checkout', 'completed', '{}', true)",
                "INSERT INTO orders.saga_timeouts (saga_id, name, due_at) VALUES ('waiting', 'authorizing_payment', '2030-01-02 03:04:05+00')",
            ] {
                try await database.query(statement)
            }
            _ = try await migrator.migrate(all)

            let rows = try await database.query("SELECT id, timeout_name, timeout_due_at FROM orders.sagas ORDER BY id")
            try #require(rows.count == 2)
            #expect(try rows[0].decode(String.self, 0) == "done")
            #expect(try rows[0].decode(String?.self, 1) == nil)
            #expect(try rows[0].decode(Date?.self, 2) == nil)
            #expect(try rows[1].decode(String.self, 0) == "waiting")
            #expect(try rows[1].decode(String?.self, 1) == "authorizing_payment")
            #expect(try rows[1].decode(Date?.self, 2) == Date(timeIntervalSince1970: 1_893_553_445))
            // Kept, empty, for replicas of the version before.
            #expect(try await database.query("SELECT count(*) FROM orders.saga_timeouts")[0].decode(Int.self, 0) == 0)
            let reader = SagaReader(schema: "orders")
            #expect(try await reader.pendingTimeout(of: "waiting", on: database)?.name == "authorizing_payment")
            #expect(try await reader.pendingTimeout(of: "done", on: database) == nil)
        } catch {
            await database.close()
            await scratch.drop()
            throw error
        }
        await database.close()
        await scratch.drop()
    }

    @Test func anIgnoredInputKeepsThePendingTimeoutAndAFiredOneIsGoneEvenWhenIgnored() async throws {
        try await CheckoutFleet.with { fleet in
            // Held in the gateway: the saga waits in authorizing_payment with its timeout pending.
            let (mug, id) = try await CheckoutFlowTests.placeHeldOrder(fleet, "MUG-ROW", stock: 5)
            try await fleet.waitForSaga(id, in: ["authorizing_payment"])
            let reader = SagaReader(schema: "orders")
            let pending = try #require(try await reader.pendingTimeout(of: id, on: fleet.database))
            #expect(pending.name == "authorizing_payment")

            // A second StockReserved for it: ignored (logged), the timeout left as it was.
            let logged = try await fleet.steps(id).count
            let duplicate = try Envelope(StockReserved(reservationID: id, lines: [StockLine(sku: mug.sku, quantity: 1)],
                                                       expiresAt: "2030-01-01T00:00:00Z"), sagaID: id)
            try await fleet.channel.publish(duplicate.body, exchange: StockReserved.exchange, routingKey: StockReserved.type,
                                            properties: duplicate.properties)
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.steps(id))?.count == logged + 1 }
            let ignored = try #require(try await fleet.steps(id).last)
            #expect(ignored.kind == .ignored)
            #expect(ignored.name == "stock-reserved")
            let kept = try #require(try await reader.pendingTimeout(of: id, on: fleet.database))
            #expect(kept.name == pending.name)
            #expect(kept.dueAt == pending.dueAt)

            try await fleet.setFaults(PaymentsSandbox.Faults())
            try await fleet.waitForSaga(id, in: ["completed"])
            #expect(try await reader.pendingTimeout(of: id, on: fleet.database) == nil)

            // A timeout that no longer applies, due now: it fires once, is ignored, and is gone
            // (left in the row, it would fire again every pass).
            let before = try await fleet.steps(id).count
            try await fleet.database.query(
                "UPDATE orders.sagas SET timeout_name = 'reserving_stock', timeout_due_at = now() - interval '1 second' WHERE id = $1", [id])
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.count("SELECT count(*) FROM orders.sagas WHERE id = $1 AND timeout_name IS NULL AND timeout_due_at IS NULL",
                                        [id])) == 1
            }
            let after = try await fleet.steps(id)
            #expect(after.count == before + 1)
            #expect(after.last?.kind == .ignored)
            #expect(after.map(\.seq) == Array(1...after.count))

            // One a replica of the version before wrote to saga_timeouts: fired from there, once.
            try await fleet.database.query(
                "INSERT INTO orders.saga_timeouts (saga_id, name, due_at) VALUES ($1, 'capturing_payment', now() - interval '1 second')", [id])
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.count("SELECT count(*) FROM orders.saga_timeouts WHERE saga_id = $1", [id])) == 0
            }
            let last = try await fleet.steps(id)
            #expect(last.count == after.count + 1)
            #expect(last.last?.kind == .ignored)
            #expect(last.last?.name == "timeout capturing_payment")
            #expect(try await fleet.order(id)?.status == "completed")
        }
    }
}
