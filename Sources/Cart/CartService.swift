public import Contracts
import FoundationEssentials
import Logging
public import Messaging
public import PostgresClient
public import RedisClient

/// Carts in Redis: one hash per cart (product → quantity) with a sliding expiry. The worker's
/// PostgreSQL schema holds its inbox and outbox (so a checkout's `PlaceOrder` leaves with the
/// request that made it, once) and the checkouts made, so that a checkout asked again (a client
/// retrying after a timeout) answers what the first one did.
public enum CartService {
    public static let schema = "cart"

    public static let migrations = [
        Migration(version: 100, name: "checkouts", sql: """
            -- One row per order a cart was checked out into: its lines as ordered.
            CREATE TABLE checkouts (
                order_id text PRIMARY KEY,
                cart_id text NOT NULL,
                lines jsonb NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX checkouts_created_at ON checkouts (created_at);
            """),
    ]

    public struct Settings: Sendable {
        public var redis: RedisClient
        /// A cart not touched for this long is gone.
        public var lifetime: Duration
        public init(redis: RedisClient, lifetime: Duration = .seconds(7 * 24 * 3600)) {
            self.redis = redis
            self.lifetime = lifetime
        }
    }

    static func key(_ cartID: String) -> String { "shopfleet:cart:\(cartID)" }

    /// Sets a line unless that would make a line too many; refreshes the expiry. Returns 0 when the
    /// cart is full.
    static let setLine = RedisScript("""
        local key, product, quantity, maxLines, ttl = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
        if redis.call('HEXISTS', key, product) == 0 and redis.call('HLEN', key) >= maxLines then return 0 end
        redis.call('HSET', key, product, quantity)
        redis.call('EXPIRE', key, ttl)
        return 1
        """)

    /// Adds one cart into another (quantities capped, lines beyond the limit left out) and deletes
    /// the first: run again, it finds nothing to add.
    static let merge = RedisScript("""
        local from, into = KEYS[1], KEYS[2]
        local maxLines, maxQuantity, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
        local lines = redis.call('HGETALL', from)
        for i = 1, #lines, 2 do
            local have = tonumber(redis.call('HGET', into, lines[i]) or '0')
            if have > 0 or redis.call('HLEN', into) < maxLines then
                redis.call('HSET', into, lines[i], math.min(have + tonumber(lines[i + 1]), maxQuantity))
            end
        end
        redis.call('DEL', from)
        if redis.call('EXISTS', into) == 1 then redis.call('EXPIRE', into, ttl) end
        return #lines / 2
        """)

    /// Lowers each product's quantity by what was ordered (a line at zero goes), once per order:
    /// the order's marker (KEYS[2], kept for a week) is set in the same script, so an event
    /// delivered again, or published twice, takes nothing more out. Returns -1 when the order was
    /// taken out before.
    static let takeOut = RedisScript("""
        local key, marker, ttl = KEYS[1], KEYS[2], ARGV[1]
        if not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then return -1 end
        for i = 2, #ARGV, 2 do
            local left = tonumber(redis.call('HGET', key, ARGV[i]) or '0') - tonumber(ARGV[i + 1])
            if left > 0 then redis.call('HSET', key, ARGV[i], left) else redis.call('HDEL', key, ARGV[i]) end
        end
        return redis.call('HLEN', key)
        """)

    static func takenOutKey(_ orderID: String) -> String { "shopfleet:cart-taken-out:\(orderID)" }

    public static func definition(_ settings: Settings, schema: String = schema) -> WorkerDefinition {
        let redis = settings.redis
        let ttl = Int(settings.lifetime.components.seconds)
        var handlers = HandlerRegistry()

        @Sendable func read(_ cartID: String) async throws -> Cart {
            let replies = try await redis.pipeline([RedisCommand("HGETALL", key(cartID)), RedisCommand("EXPIRE", key(cartID), ttl)])
            let fields = replies[0].array ?? []
            var lines: [CartLine] = []
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                guard let product = fields[index].string, let quantity = fields[index + 1].integer else { continue }
                lines.append(CartLine(productID: product, quantity: Int(quantity)))
            }
            return Cart(cartID: cartID, lines: lines.sorted { $0.productID < $1.productID })
        }

        handlers.answer(GetCart.self) { query, _ in try await read(query.cartID) }

        handlers.respond(SetCartLine.self) { request, _ in
            let set = try await redis.evaluate(setLine, keys: [key(request.cartID)],
                                               arguments: [request.productID, request.quantity, Cart.maximumLines, ttl])
            if set.integer == 0 {
                throw PermanentFailure("limit", "the cart already holds \(Cart.maximumLines) products, the most it can")
            }
            return try await read(request.cartID)
        }
        handlers.respond(RemoveCartLine.self) { request, _ in
            _ = try await redis.send("HDEL", key(request.cartID), request.productID)
            return try await read(request.cartID)
        }
        handlers.respond(ClearCart.self) { request, _ in
            _ = try await redis.send("DEL", key(request.cartID))
            return Cart(cartID: request.cartID, lines: [])
        }
        handlers.respond(MergeCarts.self) { request, _ in
            _ = try await redis.evaluate(merge, keys: [key(request.fromCartID), key(request.intoCartID)],
                                         arguments: [Cart.maximumLines, Cart.maximumQuantity, ttl])
            return try await read(request.intoCartID)
        }
        // The same order asked again (the caller timed out and retried) answers what the first
        // checkout did and sends nothing: the cart may have changed since, or been emptied by the
        // order's confirmation.
        let checkouts = "\(quoteIdentifier(schema)).checkouts"
        handlers.respond(CheckoutCart.self) { request, context in
            let done = try await context.database.query("SELECT lines::text FROM \(checkouts) WHERE order_id = $1", [request.orderID])
            if done.count == 1 {
                let lines = try JSONDecoder().decode([CartLine].self, from: Data(try done[0].decode(String.self, 0).utf8))
                return CheckoutCart.Reply(orderID: request.orderID, lines: lines)
            }
            let cart = try await read(request.cartID)
            guard !cart.lines.isEmpty else { throw PermanentFailure("empty", "the cart is empty: there is nothing to order") }
            try context.write("INSERT INTO \(checkouts) (order_id, cart_id, lines) VALUES ($1, $2, $3)",
                              [request.orderID, request.cartID, PostgresJSON(cart.lines)])
            try await context.send(PlaceOrder(orderID: request.orderID, customerID: request.customerID, customerEmail: request.customerEmail,
                                              lines: cart.lines.map { OrderLineRequest(productID: $0.productID, quantity: $0.quantity) },
                                              paymentMethod: request.paymentMethod, shippingAddress: request.shippingAddress),
                               sagaID: request.orderID)
            return CheckoutCart.Reply(orderID: request.orderID, lines: cart.lines)
        }
        // A confirmed order takes what it bought out of the customer's cart, once; what the
        // customer added since the checkout stays.
        handlers.onWithoutTransaction(OrderConfirmed.self) { event, context in
            var arguments: [any RedisArgument] = [7 * 24 * 3600]
            for line in event.order.lines { arguments += [line.productID, line.quantity] }
            let left = try await redis.evaluate(takeOut, keys: [key(Cart.id(customer: event.order.customerID)), takenOutKey(event.order.orderID)],
                                                arguments: arguments)
            if left.integer == -1 {
                context.logger.info("order already taken out of the cart; nothing to do", metadata: ["order_id": .string(event.order.orderID)])
            }
        }
        // A checkout is remembered for a week, longer than the edge remembers an order's key (a day).
        let forget = ScheduledJob("forget-old-checkouts", every: .seconds(600)) { job in
            try await job.database.query("DELETE FROM \(checkouts) WHERE created_at < now() - interval '7 days'")
        }
        return WorkerDefinition(service: "cart", schema: schema, queues: ["cart.queries", "cart.order-events"], migrations: migrations,
                                handlers: handlers, jobs: [forget])
    }
}
