import AMQPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import NIOCore
import RedisClient
import ShopfleetTesting
import Testing

/// Carts in Redis through the cart worker: set, remove, clear, limits, merge at login, the sliding
/// expiry, and checkout into an order that, once confirmed, empties the cart.
@Suite("Carts", .serialized)
struct CartTests {
    @Test func aCartIsFilledMergedCheckedOutAndClearedByTheConfirmation() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CART_TTL": "30s"]) { fleet in
            let mug = CheckoutFleet.product("MUG-CART", price: 1250)
            let lamp = CheckoutFleet.product("LAMP-CART", price: 4000)
            try await fleet.seed([.init(product: mug, stock: 10), .init(product: lamp, stock: 10)])
            let queries = try await QueryClient(connection: fleet.amqp)
            let customer = "cus-" + UUIDv7.generate()
            let mine = Cart.id(customer: customer)
            let anonymous = "anon-" + UUIDv7.generate()

            // Setting is idempotent: the same request twice leaves one line of that quantity.
            _ = try await queries.ask(SetCartLine(cartID: anonymous, productID: mug.id, quantity: 2))
            var cart = try await queries.ask(SetCartLine(cartID: anonymous, productID: mug.id, quantity: 2))
            #expect(cart.lines == [CartLine(productID: mug.id, quantity: 2)])
            _ = try await queries.ask(SetCartLine(cartID: mine, productID: mug.id, quantity: 98))
            cart = try await queries.ask(SetCartLine(cartID: mine, productID: lamp.id, quantity: 1))
            #expect(cart.lines.count == 2)

            // The sliding expiry: every touch sets it again.
            let redis = RedisClient(configuration: try RedisConfiguration(url: try TestServers.redisURL()), maximumConnections: 1)
            let ttl = try await redis.send("TTL", "shopfleet:cart:\(mine)").integer ?? -1
            #expect((1...30).contains(ttl))

            // At login the anonymous cart joins the customer's: quantities add up to the maximum.
            cart = try await queries.ask(MergeCarts(fromCartID: anonymous, intoCartID: mine))
            #expect(cart.lines == [CartLine(productID: lamp.id, quantity: 1), CartLine(productID: mug.id, quantity: 99)].sorted { $0.productID < $1.productID })
            #expect(try await queries.ask(GetCart(cartID: anonymous)).lines.isEmpty)
            #expect(try await queries.ask(MergeCarts(fromCartID: anonymous, intoCartID: mine)) == cart)  // again: nothing more

            // Limits: a quantity out of range is refused by validation, a 51st product by the worker.
            do {
                _ = try await queries.ask(SetCartLine(cartID: mine, productID: mug.id, quantity: 100))
                Issue.record("quantity 100 accepted")
            } catch QueryClient.Failure.rejected(_, _, let message) {
                #expect(message.contains("quantity must be 1 to 99"))
            }
            let full = "anon-" + UUIDv7.generate()
            for index in 0..<Cart.maximumLines { _ = try await queries.ask(SetCartLine(cartID: full, productID: "p\(index)", quantity: 1)) }
            do {
                _ = try await queries.ask(SetCartLine(cartID: full, productID: "one-too-many", quantity: 1))
                Issue.record("a 51st product accepted")
            } catch QueryClient.Failure.rejected(_, _, let message) {
                #expect(message.contains("already holds 50 products"))
            }

            cart = try await queries.ask(RemoveCartLine(cartID: mine, productID: mug.id))
            #expect(cart.lines == [CartLine(productID: lamp.id, quantity: 1)])
            _ = try await queries.ask(SetCartLine(cartID: mine, productID: mug.id, quantity: 3))

            // Checkout: the cart becomes an order; confirmed, what it bought leaves the cart, and
            // what was added after the checkout stays.
            let orderID = UUIDv7.generate()
            let address = Address(name: "Ada", line1: "1 Test Street", postalCode: "1000", city: "Brussels", country: "BE")
            let checkout = try await queries.ask(CheckoutCart(cartID: mine, orderID: orderID, customerID: customer, customerEmail: "ada@example.com",
                                                              paymentMethod: "pm_card_visa", shippingAddress: address))
            #expect(checkout.lines.count == 2)
            let later = CheckoutFleet.product("LATER-CART", price: 100)
            _ = try await queries.ask(SetCartLine(cartID: mine, productID: later.id, quantity: 1))
            let order = try await fleet.waitForSaga(orderID, in: ["completed"])
            #expect(order.status == "completed")
            #expect(try await fleet.stock("MUG-CART") == (onHand: 7, reserved: 0))
            try await waitUntil(deadline: .seconds(20)) {
                (try? await queries.ask(GetCart(cartID: mine)))?.lines == [CartLine(productID: later.id, quantity: 1)]
            }
            _ = try await queries.ask(ClearCart(cartID: mine))

            // An empty cart cannot be checked out.
            do {
                _ = try await queries.ask(CheckoutCart(cartID: mine, orderID: UUIDv7.generate(), customerID: customer, customerEmail: "ada@example.com",
                                                       paymentMethod: "pm_card_visa", shippingAddress: address))
                Issue.record("an empty cart was checked out")
            } catch QueryClient.Failure.rejected(_, _, let message) {
                #expect(message.contains("the cart is empty"))
            }
            await redis.close()
        }
    }

    /// A confirmation delivered twice (at-least-once: a redelivery, or the relay publishing a row
    /// its handler published too) takes the order's lines out of the cart once.
    @Test func aConfirmationDeliveredTwiceTakesTheOrderOutOnce() async throws {
        try await CheckoutFleet.with { fleet in
            let queries = try await QueryClient(connection: fleet.amqp)
            let customer = "cus-" + UUIDv7.generate()
            let mug = CheckoutFleet.product("MUG-TWICE", price: 1250)
            _ = try await queries.ask(SetCartLine(cartID: Cart.id(customer: customer), productID: mug.id, quantity: 3))
            let order = OrderSummary(orderID: UUIDv7.generate(), customerID: customer, customerEmail: "ada@example.com", status: "confirmed",
                                     statusReason: nil, lines: [OrderLine(productID: mug.id, sku: mug.sku, name: mug.name, quantity: 1,
                                                                          unitPrice: mug.price)],
                                     total: mug.price, placedAt: "2026-12-02T12:00:00Z", updatedAt: "2026-12-02T12:00:00Z")
            let envelope = try Envelope(OrderConfirmed(order: order))
            for _ in 0..<2 {
                try await fleet.channel.publish(envelope.body, exchange: OrderConfirmed.exchange, routingKey: OrderConfirmed.type,
                                                properties: envelope.properties)
            }
            // Both copies handled, then the cart.
            try await waitUntil(deadline: .seconds(20)) {
                let text = (try? await fleet.get("cart", "/metrics")).map { String(buffer: $0.body) } ?? ""
                return text.split(separator: "\n").contains {
                    $0.hasPrefix("shopfleet_messages_acked_total") && $0.contains("orders.OrderConfirmed.v1") && $0.hasSuffix(" 2")
                }
            }
            #expect(try await queries.ask(GetCart(cartID: Cart.id(customer: customer))).lines == [CartLine(productID: mug.id, quantity: 2)])
            try await queries.close()
        }
    }
}
