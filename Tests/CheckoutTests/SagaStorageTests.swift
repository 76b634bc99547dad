import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import Orders
import PostgresClient
import Sagas
import ShopfleetTesting
import Testing

/// The saga row holds its pending timeout and the count of its steps (orders migration 130):
/// sagas stored before it keep their timeout and number their next steps after their log.
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
                "INSERT INTO orders.saga_steps (saga_id, seq, kind, name) VALUES ('waiting', 1, 'started', 'place'), ('waiting', 2, 'sent', 'x')",
                "INSERT INTO orders.saga_timeouts (saga_id, name, due_at) VALUES ('waiting', 'authorizing_payment', '2030-01-02 03:04:05+00')",
            ] {
                try await database.query(statement)
            }
            _ = try await migrator.migrate(all)

            let rows = try await database.query("SELECT id, timeout_name, timeout_due_at, steps FROM orders.sagas ORDER BY id")
            #expect(rows.count == 2)
            #expect(try rows[0].decode(String.self, 0) == "done")
            #expect(try rows[0].decode(String?.self, 1) == nil)
            #expect(try rows[0].decode(Date?.self, 2) == nil)
            #expect(try rows[1].decode(String.self, 0) == "waiting")
            #expect(try rows[1].decode(String?.self, 1) == "authorizing_payment")
            #expect(try rows[1].decode(Date?.self, 2) == Date(timeIntervalSince1970: 1_893_553_445))
            // Counted from the log by the engine when it next locks the saga, not by the migration.
            #expect(try rows[1].decode(Int?.self, 3) == nil)
            #expect(try await database.query("SELECT to_regclass('orders.saga_timeouts')::text")[0].decode(String?.self, 0) == nil)
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

    /// A saga whose row has no step count (stored before migration 130) is counted from its log:
    /// the next step follows the last one, and the count is kept from then on.
    @Test func aSagaStoredWithoutAStepCountNumbersItsNextStepAfterItsLog() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-ROW", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let id = try await fleet.placeOrder([(mug, 1)])
            try await fleet.waitForSaga(id, in: ["completed"])
            let logged = try await fleet.steps(id)
            #expect(logged.map(\.seq) == Array(1...logged.count))
            #expect(try await fleet.count("SELECT steps FROM orders.sagas WHERE id = $1", [id]) == logged.count)
            // Completed: nothing is pending, in the row either.
            #expect(try await fleet.count("SELECT count(*) FROM orders.sagas WHERE id = $1 AND timeout_name IS NULL AND timeout_due_at IS NULL",
                                          [id]) == 1)

            try await fleet.database.query("UPDATE orders.sagas SET steps = NULL WHERE id = $1", [id])
            // An operator's cancel after the order completed: ignored, and logged.
            _ = try await fleet.send(CancelOrder(orderID: id, customerID: nil, reason: "too late", requestedBy: "ops@example.com"))
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.steps(id))?.count == logged.count + 1 }
            let after = try await fleet.steps(id)
            #expect(after.map(\.seq) == Array(1...logged.count + 1))
            #expect(after.last?.kind == .ignored)
            #expect(after.last?.name == "cancel-requested")
            #expect(try await fleet.count("SELECT steps FROM orders.sagas WHERE id = $1", [id]) == logged.count + 1)
            #expect(try await fleet.order(id)?.status == "completed")
        }
    }
}
