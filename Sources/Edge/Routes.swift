import Auth
import Contracts
import CoreMetrics
import FoundationEssentials
import Hummingbird
import HTTPTypes
import Messaging
import NIOCore
import RedisClient

// MARK: - /v1/auth

struct AuthRoutes {
    let edge: EdgeServer

    struct Tokens: Encodable {
        var customerId: String
        var role: String
        var accessToken: String
        var accessTokenExpiresAt: String
        var refreshToken: String
        var refreshTokenExpiresAt: String
    }

    func add(to group: RouterGroup<EdgeContext>) {
        group.post("register") { request, context -> Response in
            let body = try await RegisterBody.read(request)
            guard (8...128).contains(body.password.count) else { throw Problem.invalid("password must be 8 to 128 characters") }
            try await RegistrationLimit(redis: edge.redis, prefix: edge.settings.redisPrefix, perHour: edge.settings.registrationsPerHour).check(client: context.client)
            let customerID = "cus-" + UUIDv7.generate()
            let hash = try await edge.passwordWork { try await edge.passwords.hash(body.password) }
            let reply = try await edge.ask(try edge.checked(RegisterCustomer(customerID: customerID, email: body.email, name: body.name, passwordHash: hash)))
            guard reply.registered else { throw Problem.conflict("an account with this email exists already") }
            struct Registered: Encodable { var customerId: String }
            return try json(Registered(customerId: customerID), status: .created)
        }

        group.post("login") { request, context -> Response in
            let body = try await LoginBody.read(request)
            let throttle = LoginThrottle(redis: edge.redis, prefix: edge.settings.redisPrefix, email: body.email, client: context.client)
            try await throttle.begin()
            let found = try await edge.ask(GetCredentials(email: body.email))
            // An unknown email costs the same bcrypt work as a known one: the time of the answer
            // does not tell whether an account exists.
            let right = try await edge.passwordWork {
                if let found { return try await edge.passwords.verify(body.password, against: found.passwordHash) }
                FrontDoorMetrics.unknownEmailLogins.increment()
                return try await edge.passwords.verifyAgainstNoAccount(body.password)
            }
            guard right, let credentials = found else {
                await throttle.failed()
                throw Problem.unauthorized("the email or the password is wrong")
            }
            await throttle.succeeded()
            let refresh = RefreshTokens.generate()
            let session = try await edge.ask(StartSession(customerID: credentials.customerID, refreshTokenHash: RefreshTokens.hash(refresh)))
            if let anonymous = body.cartId {
                // Only an anonymous cart this edge gave: never another customer's.
                guard CartRoutes.isAnonymousCartID(anonymous) else {
                    throw Problem.invalid("cartId must be a cart id this edge gave (anon- and 32 hex digits)")
                }
                _ = try await edge.ask(try edge.checked(MergeCarts(fromCartID: anonymous, intoCartID: Cart.id(customer: credentials.customerID))))
            }
            return try json(Tokens(customerId: session.customerID, role: session.role, accessToken: session.accessToken,
                                   accessTokenExpiresAt: session.accessTokenExpiresAt, refreshToken: refresh,
                                   refreshTokenExpiresAt: session.refreshTokenExpiresAt))
        }

        group.post("refresh") { request, _ -> Response in
            let body = try await RefreshBody.read(request)
            let next = RefreshTokens.generate()
            let reply = try await edge.ask(RefreshSession(refreshTokenHash: RefreshTokens.hash(body.refreshToken), newRefreshTokenHash: RefreshTokens.hash(next)))
            guard let session = reply.session else { throw Problem.unauthorized("the refresh token is \(reply.problem ?? "not valid"); log in again") }
            return try json(Tokens(customerId: session.customerID, role: session.role, accessToken: session.accessToken,
                                   accessTokenExpiresAt: session.accessTokenExpiresAt, refreshToken: next,
                                   refreshTokenExpiresAt: session.refreshTokenExpiresAt))
        }

        group.post("logout") { request, _ -> Response in
            let body = try await RefreshBody.read(request)
            _ = try await edge.ask(EndSession(refreshTokenHash: RefreshTokens.hash(body.refreshToken)))
            return Response(status: .noContent)
        }
    }
}

// MARK: - /v1/products

struct ProductRoutes {
    let edge: EdgeServer

    struct Page: Encodable {
        var items: [SearchProducts.Hit]
        var nextCursor: String?
    }

    func add(to group: RouterGroup<EdgeContext>) {
        group.get { request, _ -> Response in
            let raw = request.uri.queryParameters
            // An empty parameter (`?cursor=`) is an absent one.
            func value(_ name: String) -> String? { raw[name[...]].map(String.init).flatMap { $0.isEmpty ? nil : $0 } }
            func integer(_ name: String) throws -> Int? {
                guard let text = value(name) else { return nil }
                guard let value = Int(String(text)) else { throw Problem.invalid("\(name) must be a whole number, not '\(text.prefix(40))'") }
                return value
            }
            var sort: SearchProducts.Sort?
            if let text = value("sort") {
                guard let value = SearchProducts.Sort(rawValue: text) else {
                    throw Problem.invalid("sort must be one of \(SearchProducts.Sort.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                sort = value
            }
            var inStock: Bool?
            if let text = value("inStock") {
                guard text == "true" || text == "false" else { throw Problem.invalid("inStock must be true or false") }
                inStock = text == "true"
            }
            let search = try edge.checked(SearchProducts(
                text: value("q"), category: value("category"), minimumPrice: try integer("minPrice"),
                maximumPrice: try integer("maxPrice"), inStockOnly: inStock, sort: sort, limit: try integer("limit"),
                cursor: value("cursor")))
            let reply = try await edge.ask(search)
            return try json(Page(items: reply.hits, nextCursor: reply.nextCursor))
        }

        group.get(":id") { _, context -> Response in
            let id = try context.parameters.require("id")
            guard let product = try await edge.products.product(id, fetch: { try await edge.ask(GetProduct(productID: id)) }),
                  product.active else {
                throw Problem.notFound("no product \(id)")
            }
            return try json(product)
        }
    }
}

// MARK: - /v1/cart

struct CartRoutes {
    let edge: EdgeServer

    /// The customer's cart when signed in; else the anonymous cart of `X-Cart-ID` (made on the
    /// first change, and returned in that header).
    /// `anon-` and 32 hex digits: the form of the anonymous cart ids the edge gives.
    static func isAnonymousCartID(_ id: String) -> Bool {
        id.hasPrefix("anon-") && id.count == 37 && id.dropFirst(5).allSatisfy { $0.isHexDigit }
    }

    func cartID(_ request: Request, _ context: EdgeContext, create: Bool) throws -> (id: String?, created: Bool) {
        if let claims = context.claims { return (Cart.id(customer: claims.customerID), false) }
        if let header = request.headers[EdgeHeaders.cartID] {
            guard Self.isAnonymousCartID(header) else {
                throw Problem.invalid("X-Cart-ID must be a cart id this edge gave (anon- and 32 hex digits)")
            }
            return (header, false)
        }
        return create ? ("anon-" + UUIDString.make(), true) : (nil, false)
    }

    func reply(_ cart: Cart) throws -> Response {
        try json(cart, headers: cart.cartID.hasPrefix("anon-") ? [EdgeHeaders.cartID: cart.cartID] : [:])
    }

    func add(to group: RouterGroup<EdgeContext>) {
        group.get { request, context -> Response in
            guard let id = try cartID(request, context, create: false).id else { return try json(Cart(cartID: "", lines: [])) }
            return try reply(try await edge.ask(GetCart(cartID: id)))
        }
        group.put("lines/:productId") { request, context -> Response in
            let productID = try context.parameters.require("productId")
            let body = try await CartLineBody.read(request)
            let set = try edge.checked(SetCartLine(cartID: "anon-check", productID: productID, quantity: body.quantity))
            guard let product = try await edge.products.product(productID, fetch: { try await edge.ask(GetProduct(productID: productID)) }),
                  product.active else {
                throw Problem.invalid("no product \(productID) is for sale")
            }
            let id = try cartID(request, context, create: true).id!
            do {
                return try reply(try await edge.ask(SetCartLine(cartID: id, productID: set.productID, quantity: set.quantity)))
            }
        }
        group.delete("lines/:productId") { request, context -> Response in
            let productID = try context.parameters.require("productId")
            guard let id = try cartID(request, context, create: false).id else { throw Problem.notFound("there is no cart") }
            return try reply(try await edge.ask(try edge.checked(RemoveCartLine(cartID: id, productID: productID))))
        }
        group.delete { request, context -> Response in
            guard let id = try cartID(request, context, create: false).id else { return try json(Cart(cartID: "", lines: [])) }
            return try reply(try await edge.ask(ClearCart(cartID: id)))
        }
    }
}

// MARK: - /v1/orders

struct OrderRoutes {
    let edge: EdgeServer

    struct Accepted: Encodable {
        var orderId: String
        var status: String
    }

    func add(to group: RouterGroup<EdgeContext>) {
        group.post { request, context -> Response in
            let customer = try context.customer()
            guard let key = request.headers[EdgeHeaders.idempotencyKey], (1...100).contains(key.count) else {
                throw Problem.invalid("POST /v1/orders needs an Idempotency-Key header (1 to 100 characters) so that a retry places one order")
            }
            let body = try await OrderBody.read(request)
            // The same key of the same customer is the same order, whatever happens in between.
            let orderID = "ord-" + RefreshTokens.hash("\(customer.customerID):\(key)").prefix(32)
            let fingerprint = RefreshTokens.hash("\(body.paymentMethod)|\(body.shippingAddress)")
            let remembered = "\(edge.settings.redisPrefix)idempotency:\(customer.customerID):\(RefreshTokens.hash(key))"
            let stored = try await edge.redis.send("SET", remembered, fingerprint, "NX", "GET", "EX", 86_400)
            if let previous = stored.string, previous != fingerprint {
                throw Problem.invalid("this Idempotency-Key was used for another order; use a new key for a new order")
            }
            // Asked every time, a retry too: the cart worker remembers the checkout of this order
            // and answers the same (sending nothing twice), so a 202 always means the order was
            // handed over, even when the first attempt's answer was lost or this edge died.
            do {
                let checkout = try edge.checked(CheckoutCart(cartID: Cart.id(customer: customer.customerID), orderID: orderID,
                                                             customerID: customer.customerID, customerEmail: customer.email,
                                                             paymentMethod: body.paymentMethod, shippingAddress: body.shippingAddress))
                _ = try await edge.ask(checkout)
            } catch let problem as Problem where problem.status.code < 500 && stored.string == nil {
                _ = try? await edge.redis.send("DEL", remembered)  // nothing was placed: the key may be used again
                throw problem
            }
            return try json(Accepted(orderId: orderID, status: "pending"), status: .accepted, headers: [.location: "/v1/orders/\(orderID)"])
        }

        group.get { request, context -> Response in
            let customer = try context.customer()
            let query = request.uri.queryParameters
            var limit = 20
            if let text = query["limit"] {
                guard let value = Int(String(text)), (1...100).contains(value) else { throw Problem.invalid("limit must be 1 to 100") }
                limit = value
            }
            let orders = try await edge.ask(ListCustomerOrders(customerID: customer.customerID, limit: limit, before: query["before"].map(String.init).flatMap { $0.isEmpty ? nil : $0 }))
            struct Orders: Encodable { var items: [OrderSummary] }
            return try json(Orders(items: orders))
        }

        group.get(":id") { _, context -> Response in
            let customer = try context.customer()
            let id = try context.parameters.require("id")
            guard let order = try await edge.ask(GetOrder(orderID: id, customerID: customer.customerID)) else {
                throw Problem.notFound("no order \(id) of yours")
            }
            return try json(order)
        }

        group.post(":id/cancel") { request, context -> Response in
            let customer = try context.customer()
            let id = try context.parameters.require("id")
            // The body is optional: none, or an empty one (`Content-Length: 0`, what most clients
            // send with a POST of nothing), is no reason.
            let empty = request.headers[.contentLength].map { $0 == "0" } ?? (request.headers[.transferEncoding] == nil)
            let reason = empty ? nil : try await CancelBody.read(request).reason
            guard try await edge.ask(GetOrder(orderID: id, customerID: customer.customerID)) != nil else {
                throw Problem.notFound("no order \(id) of yours")
            }
            try await edge.send(CancelOrder(orderID: id, customerID: customer.customerID, reason: reason ?? "cancelled by the customer"), sagaID: id)
            return try json(Accepted(orderId: id, status: "cancel requested"), status: .accepted, headers: [.location: "/v1/orders/\(id)"])
        }
    }
}

// MARK: - /v1/admin

struct AdminRoutes {
    let edge: EdgeServer

    struct Accepted: Encodable { var accepted: String }

    func add(to group: RouterGroup<EdgeContext>) {
        group.put("products/:id") { request, context -> Response in
            _ = try context.admin()
            let id = try context.parameters.require("id")
            let body = try await ProductBody.read(request)
            try await edge.send(UpsertProduct(product: Product(id: id, sku: body.sku, name: body.name, description: body.description,
                                                               category: body.category, price: body.price, active: body.active ?? true)))
            return try json(Accepted(accepted: "product \(id)"), status: .accepted, headers: [.location: "/v1/products/\(id)"])
        }
        group.post("products/:id/deactivate") { _, context -> Response in
            _ = try context.admin()
            let id = try context.parameters.require("id")
            try await edge.send(DeactivateProduct(productID: id))
            return try json(Accepted(accepted: "deactivate \(id)"), status: .accepted)
        }
        group.post("stock/:sku") { request, context -> Response in
            _ = try context.admin()
            let sku = try context.parameters.require("sku")
            // A relative change must happen once: the key names the change, and its message id is
            // derived from it, so a retry (after a lost answer) is the same message to inventory's inbox.
            guard let key = request.headers[EdgeHeaders.idempotencyKey], (1...100).contains(key.count) else {
                throw Problem.invalid("POST /v1/admin/stock/{sku} needs an Idempotency-Key header (1 to 100 characters) so that a retry adjusts the stock once")
            }
            let body = try await StockBody.read(request)
            // The same key with another change is a mistake the inbox would hide (the second change
            // would be dropped as a copy of the first): refuse it.
            let fingerprint = RefreshTokens.hash("\(body.delta)|\(body.reason)")
            let remembered = "\(edge.settings.redisPrefix)idempotency:stock:\(RefreshTokens.hash("\(sku):\(key)"))"
            let stored = try await edge.redis.send("SET", remembered, fingerprint, "NX", "GET", "EX", 7 * 86_400)
            if let previous = stored.string, previous != fingerprint {
                throw Problem.invalid("this Idempotency-Key was used for another change of \(sku); use a new key for a new change")
            }
            try await edge.send(AdjustStock(sku: sku, delta: body.delta, reason: body.reason),
                                messageID: "stock-" + RefreshTokens.hash("\(sku):\(key)").prefix(40))
            return try json(Accepted(accepted: "stock \(sku) \(body.delta > 0 ? "+" : "")\(body.delta)"), status: .accepted)
        }
    }
}
