import AMQPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import PostgresClient
import Testing

/// The rules around the saga: prices and products come from the catalog, orders are found by
/// their customer, and a reservation nobody commits lapses by itself.
@Suite("Order rules across the fleet", .serialized)
struct OrderRulesTests {
    @Test func unknownOrRetiredProductsCancelAtOnceAndQueriesShowEachCustomersOrders() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-R", price: 1250)
            let old = CheckoutFleet.product("OLD-R", price: 500)
            try await fleet.seed([.init(product: mug, stock: 5), .init(product: old, stock: 5)])
            try await fleet.send(DeactivateProduct(productID: old.id))
            // Orders learn it from the catalog's event: until then their copy still sells it.
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.count("SELECT count(*) FROM orders.catalog_prices WHERE product_id = $1 AND price_amount IS NULL",
                                        [old.id])) == 1
            }

            let retired = try await fleet.placeOrder([(mug, 1), (old, 1)])
            let unknown = try await fleet.placeOrder([(CheckoutFleet.product("NOPE-R", price: 1), 1)])
            let good = try await fleet.placeOrder([(mug, 2)])
            try await waitUntil(deadline: .seconds(30)) {
                let states = try? await [retired, unknown].asyncMap { try await fleet.order($0)?.status }
                return states == ["cancelled", "cancelled"]
            }
            #expect(try await fleet.order(retired)?.reason?.contains("is no longer sold") == true)
            #expect(try await fleet.order(unknown)?.reason?.contains("unknown product prod-nope-r") == true)
            #expect(try await fleet.order(retired)?.sagaState == nil)  // no saga: nothing to undo
            try await fleet.waitForSaga(good, in: ["completed"])
            #expect(try await fleet.stock("MUG-R") == (onHand: 3, reserved: 0))

            // The order queries, over request/reply, as the edge will ask them.
            let queries = try await QueryClient(connection: fleet.amqp)
            let summary = try #require(try await queries.ask(GetOrder(orderID: good, customerID: "cus-test")))
            #expect(summary.status == "completed")
            #expect(summary.total == Money(amount: 2500, currency: "EUR"))
            #expect(summary.lines == [OrderLine(productID: mug.id, sku: "MUG-R", name: mug.name, quantity: 2, unitPrice: mug.price)])
            #expect(try await queries.ask(GetOrder(orderID: good, customerID: "somebody-else")) == nil)
            let mine = try await queries.ask(ListCustomerOrders(customerID: "cus-test", limit: 10))
            #expect(Set(mine.map(\.orderID)) == [retired, unknown, good])
            #expect(mine.map(\.placedAt) == mine.map(\.placedAt).sorted(by: >))
            let page = try await queries.ask(ListCustomerOrders(customerID: "cus-test", limit: 10, before: mine[0].orderID))
            #expect(page.map(\.orderID) == Array(mine.dropFirst()).map(\.orderID))
        }
    }

    @Test func ordersArePricedFromTheirCopyOfTheCatalogWhichTakesEventsOnlyInRevisionOrder() async throws {
        try await CheckoutFleet.with { fleet in
            var mug = CheckoutFleet.product("MUG-P", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 20)])
            func copied() async throws -> (price: Int?, revision: Int)? {
                let rows = try await fleet.database.query("SELECT price_amount, revision FROM orders.catalog_prices WHERE product_id = $1",
                                                          [mug.id])
                return rows.count == 1 ? (try rows[0].decode(Int?.self, 0), try rows[0].decode(Int.self, 1)) : nil
            }
            func total(_ id: String) async throws -> Int {
                try await fleet.database.query("SELECT total_amount FROM orders.orders WHERE id = $1", [id])[0].decode(Int.self, 0)
            }
            /// Publishes a catalog event as a catalog would, and waits until the orders worker has
            /// handled it. (Search and the edge take it too: nothing here asks them.)
            func publish<E: Event>(_ event: E) async throws {
                let envelope = try Envelope(event)
                try await fleet.channel.publish(envelope.body, exchange: E.exchange, routingKey: E.type, properties: envelope.properties,
                                                mandatory: true)
                try await waitUntil(deadline: .seconds(20)) {
                    (try? await fleet.count("SELECT count(*) FROM orders.inbox WHERE message_id = $1", [envelope.messageID])) == 1
                }
            }
            try await waitUntil(deadline: .seconds(20)) { (try? await copied()).map { $0 == (1250, 1) } ?? false }

            // The copy prices the order, not a question to the catalog: a price planted in the copy is charged.
            try await fleet.database.query("UPDATE orders.catalog_prices SET price_amount = 999 WHERE product_id = $1", [mug.id])
            let planted = try await fleet.placeOrder([(mug, 2)])
            try await fleet.waitForSaga(planted, in: ["completed"])
            #expect(try await total(planted) == 1998)

            // A new price reaches the copy with the catalog's next revision.
            mug.price.amount = 1500
            try await fleet.send(UpsertProduct(product: mug))
            try await waitUntil(deadline: .seconds(20)) { (try? await copied()).map { $0 == (1500, 2) } ?? false }
            // An older revision arriving late changes nothing.
            var stale = mug
            stale.price.amount = 100
            stale.revision = 1
            try await publish(ProductUpserted(product: stale))
            #expect(try await copied().map { $0 == (1500, 2) } == true)
            let repriced = try await fleet.placeOrder([(mug, 1)])
            try await fleet.waitForSaga(repriced, in: ["completed"])
            #expect(try await total(repriced) == 1500)

            // An event without a revision (a catalog from before them) cannot be ordered: the copy
            // drops the price but keeps the revision, so a late event of that revision is refused
            // too; the next order asks the catalog (1500, not 100) and puts its answer back.
            stale.revision = nil
            try await publish(ProductUpserted(product: stale))
            #expect(try await copied().map { $0 == (nil, 2) } == true)
            stale.revision = 2
            try await publish(ProductUpserted(product: stale))
            #expect(try await copied().map { $0 == (nil, 2) } == true)
            let asked = try await fleet.placeOrder([(mug, 1)])
            try await fleet.waitForSaga(asked, in: ["completed"])
            #expect(try await total(asked) == 1500)
            #expect(try await copied().map { $0 == (1500, 2) } == true)
            // A copy without the product (as after the upgrade that brought the copy) fills itself
            // the same way.
            try await fleet.database.query("DELETE FROM orders.catalog_prices WHERE product_id = $1", [mug.id])
            let refilled = try await fleet.placeOrder([(mug, 2)])
            try await fleet.waitForSaga(refilled, in: ["completed"])
            #expect(try await total(refilled) == 3000)
            #expect(try await copied().map { $0 == (1500, 2) } == true)

            // Taken off sale: the copy keeps the revision without a price, and the order is
            // refused with the catalog's own words.
            try await fleet.send(DeactivateProduct(productID: mug.id))
            try await waitUntil(deadline: .seconds(20)) { (try? await copied()).map { $0 == (nil, 3) } ?? false }
            let retired = try await fleet.placeOrder([(mug, 1)])
            try await waitUntil(deadline: .seconds(30)) { (try? await fleet.order(retired))?.status == "cancelled" }
            #expect(try await fleet.order(retired)?.reason?.contains("is no longer sold") == true)

            // A change the catalog's code does not count (a catalog from before revisions) is counted all the same.
            try await fleet.database.query("UPDATE catalog.products SET name = name || '!' WHERE id = $1", [mug.id])
            #expect(try await fleet.count("SELECT revision FROM catalog.products WHERE id = $1", [mug.id]) == 4)
        }
    }

    @Test func aReservationNobodyCommitsIsReleasedByTheInventoryWorker() async throws {
        try await CheckoutFleet.with { fleet in
            let lamp = CheckoutFleet.product("LAMP-R", price: 4000)
            try await fleet.seed([.init(product: lamp, stock: 4)])
            let reservation = UUIDv7.generate()
            try await fleet.send(ReserveStock(reservationID: reservation, lines: [StockLine(sku: "LAMP-R", quantity: 3)], ttlSeconds: 3600))
            try await waitUntil(deadline: .seconds(10)) { (try? await fleet.stock("LAMP-R"))?.reserved == 3 }
            // Its hour passes when the test says so, however slow the machine was to get here.
            try await fleet.database.query("UPDATE inventory.reservations SET expires_at = now() - interval '1 second' WHERE id = $1", [reservation])
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.stock("LAMP-R"))?.reserved == 0 }
            #expect(try await fleet.stock("LAMP-R") == (onHand: 4, reserved: 0))
            #expect(try await fleet.count("SELECT count(*) FROM inventory.reservations WHERE id = $1 AND status = 'released' AND reason = 'expired'",
                                          [reservation]) == 1)
            // Committing it now is refused, and says why: the refusal reaches the saga's queue.
            try await fleet.send(CommitReservation(reservationID: reservation))
            try await waitUntil(deadline: .seconds(10)) {
                (try? await fleet.count("SELECT count(*) FROM orders.inbox WHERE type = $1", [ReservationCommitFailed.type])) == 1
            }
        }
    }

    @Test func searchFollowsTheCatalogAndTheStock() async throws {
        try await CheckoutFleet.with { fleet in
            let lamp = Product(id: "lamp-s", sku: "LAMP-S", name: "Brass floor lamp", description: "Tall, with a linen shade.",
                               category: "home", price: Money(amount: 12900, currency: "EUR"))
            let mug = CheckoutFleet.product("MUG-SRCH", price: 900)
            try await fleet.seed([.init(product: lamp, stock: 1), .init(product: mug, stock: 5)])
            let queries = try await QueryClient(connection: fleet.amqp)
            // The read model is fed by events: wait for it, then search with a typo.
            try await waitUntil(deadline: .seconds(20)) {
                (try? await queries.ask(SearchProducts(text: "brass lmap", inStockOnly: true)))?.hits.first?.product.id == lamp.id
            }
            // The last lamp sold: it drops out of the in-stock results, not out of the catalog.
            let id = try await fleet.placeOrder([(lamp, 1)])
            try await fleet.waitForSaga(id, in: ["completed"])
            try await waitUntil(deadline: .seconds(20)) {
                (try? await queries.ask(SearchProducts(text: "brass lamp", inStockOnly: true)))?.hits.isEmpty == true
            }
            let all = try await queries.ask(SearchProducts(text: "brass lamp"))
            #expect(all.hits.map(\.product.id) == [lamp.id])
            #expect(all.hits.first?.inStock == false)
            // Retired from the catalog: gone from search.
            try await fleet.send(DeactivateProduct(productID: lamp.id))
            try await waitUntil(deadline: .seconds(20)) {
                (try? await queries.ask(SearchProducts(text: "brass lamp")))?.hits.isEmpty == true
            }
            // A query the search worker refuses is an error reply, at once.
            do {
                _ = try await queries.ask(SearchProducts(limit: 1000))
                Issue.record("an invalid search was answered")
            } catch QueryClient.Failure.rejected(_, _, let message) {
                #expect(message.contains("limit must be 1 to 100"))
            }
        }
    }
}


extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
