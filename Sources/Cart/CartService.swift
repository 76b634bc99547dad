public import Contracts
import FoundationEssentials
public import Messaging
public import PostgresClient
public import RedisClient

/// Carts in Redis: one hash per cart (product → quantity) with a sliding expiry. The worker's
/// PostgreSQL schema holds only its inbox and outbox (so a checkout's `PlaceOrder` leaves with the
/// request that made it, once).
public enum CartService {
    public static let schema = "cart"

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

    /// Lowers each product's quantity by what was ordered; a line at zero goes.
    static let takeOut = RedisScript("""
        local key = KEYS[1]
        for i = 1, #ARGV, 2 do
            local left = tonumber(redis.call('HGET', key, ARGV[i]) or '0') - tonumber(ARGV[i + 1])
            if left > 0 then redis.call('HSET', key, ARGV[i], left) else redis.call('HDEL', key, ARGV[i]) end
        end
        return redis.call('HLEN', key)
        """)

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
        handlers.respond(CheckoutCart.self) { request, context in
            let cart = try await read(request.cartID)
            guard !cart.lines.isEmpty else { throw PermanentFailure("empty", "the cart is empty: there is nothing to order") }
            try await context.send(PlaceOrder(orderID: request.orderID, customerID: request.customerID, customerEmail: request.customerEmail,
                                              lines: cart.lines.map { OrderLineRequest(productID: $0.productID, quantity: $0.quantity) },
                                              paymentMethod: request.paymentMethod, shippingAddress: request.shippingAddress),
                               sagaID: request.orderID)
            return CheckoutCart.Reply(orderID: request.orderID, lines: cart.lines)
        }
        // A confirmed order takes what it bought out of the customer's cart; what the customer
        // added since the checkout stays.
        handlers.onWithoutTransaction(OrderConfirmed.self) { event, _ in
            var arguments: [any RedisArgument] = []
            for line in event.order.lines { arguments += [line.productID, line.quantity] }
            _ = try await redis.evaluate(takeOut, keys: [key(Cart.id(customer: event.order.customerID))], arguments: arguments)
        }
        return WorkerDefinition(service: "cart", schema: schema, queues: ["cart.queries", "cart.order-events"], handlers: handlers)
    }
}
