import AsyncHTTPClient
import Auth
import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import RedisClient
import ShopfleetTesting
import Testing

/// The shop over real HTTP against the running fleet.
@Suite("The HTTP edge", .serialized)
struct EdgeTests {
    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: [String: JSONValue]
        var text: String
        var isProblem: Bool { headers["Content-Type"].first == "application/problem+json" }
    }

    func call(_ fleet: CheckoutFleet, _ method: HTTPMethod, _ path: String, json: String? = nil, token: String? = nil,
              headers: [(String, String)] = []) async throws -> Answer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(fleet.ports["edge"]!)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(15))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        let text = String(buffer: bytes)
        let object = (try? JSONDecoder().decode([String: JSONValue].self, from: Data(text.utf8))) ?? [:]
        return Answer(status: Int(response.status.code), headers: response.headers, body: object, text: text)
    }

    func string(_ value: JSONValue?) -> String? { if case .string(let text)? = value { return text }; return nil }

    func metric(_ fleet: CheckoutFleet, _ role: String, _ name: String, containing labels: String) async throws -> Double {
        try await fleet.metric(role, name, containing: labels)
    }

    /// The edge dies while it places an order (after it remembered the key, before the checkout
    /// was answered; the checkout request itself is never handled). The client's retry with the
    /// same key asks for the checkout again, so the 202 it gets means the order exists. A retry
    /// after a success answers the same order and places nothing more.
    @Test func aRetriedOrderIsPlacedOnceAndA202MeansItExists() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_QUERY_TIMEOUT": "2s"]) { fleet in
            let mug = CheckoutFleet.product("MUG-RETRY", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let email = "retry-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "correct horse", "name": "Ada"}"#)
            let login = try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "correct horse"}"#)
            let token = try #require(string(login.body["accessToken"]))
            let customer = try #require(string(login.body["customerId"]))
            #expect(try await call(fleet, .PUT, "/v1/cart/lines/\(mug.id)", json: #"{"quantity": 2}"#, token: token).status == 200)
            let order = #"{"paymentMethod": "pm_card_visa", "shippingAddress": {"name": "Ada", "line1": "1 Test Street", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
            let key = [("Idempotency-Key", "order-1")]

            // The cart worker is down, so the checkout hangs; the edge is killed meanwhile.
            await fleet.supervisor.stop("cart")
            let redis = RedisClient(configuration: try RedisConfiguration(url: try TestServers.redisURL()), maximumConnections: 1)
            let remembered = "shopfleet:\(fleet.sandbox.vhost):idempotency:\(customer):\(RefreshTokens.hash("order-1"))"
            let asked = ContinuousClock.now
            let first = Task { try? await call(fleet, .POST, "/v1/orders", json: order, token: token, headers: key) }
            try await waitUntil(deadline: .seconds(10)) { (try? await redis.send("EXISTS", remembered).integer) == 1 }
            try await fleet.kill("edge")
            #expect(await first.value == nil, "the edge answered before it was killed")
            // The checkout request it sent is past its deadline (2 s) and the workers' leeway for
            // clocks (1 s) before anyone takes it: dropped.
            try await Task.sleep(until: asked + .seconds(4))
            try fleet.supervisor.start("cart")
            try await fleet.waitReady("cart")
            try await fleet.waitReady("edge")

            let placed = try await call(fleet, .POST, "/v1/orders", json: order, token: token, headers: key)
            #expect(placed.status == 202, "\(placed.text)")
            let id = try #require(string(placed.body["orderId"]))
            let saga = try await fleet.waitForSaga(id, in: ["completed", "cancelled"], deadline: .seconds(60))
            #expect(saga.status == "completed")
            // The cart was emptied by the confirmation; the retry still answers the same order.
            let again = try await call(fleet, .POST, "/v1/orders", json: order, token: token, headers: key)
            #expect(again.status == 202 && string(again.body["orderId"]) == id, "\(again.text)")
            #expect(try await fleet.count("SELECT count(*) FROM orders.orders WHERE customer_id = $1", [customer]) == 1)
            #expect(try await fleet.stock("MUG-RETRY") == (onHand: 3, reserved: 0))
            await redis.close()
        }
    }

    @Test func theWholeJourneyAndEveryKindOfBadInput() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = Product(id: "mug-edge", sku: "MUG-EDGE", name: "Enamel mug", description: "A blue enamel mug.", category: "kitchen",
                              price: Money(amount: 1250, currency: "EUR"))
            try await fleet.seed([.init(product: mug, stock: 5)])

            // Register, once; log in.
            let email = "ada-\(UInt32.random(in: 0...UInt32.max))@example.com"
            let registered = try await call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "correct horse", "name": "Ada"}"#)
            #expect(registered.status == 201, "\(registered.text)")
            #expect(registered.headers["X-Request-ID"].first?.isEmpty == false)
            let twice = try await call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email.uppercased())", "password": "correct horse", "name": "Ada"}"#)
            #expect(twice.status == 409 && twice.isProblem)
            let wrong = try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "wrong horse"}"#)
            #expect(wrong.status == 401 && wrong.isProblem)
            let login = try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "correct horse"}"#)
            #expect(login.status == 200, "\(login.text)")
            let token = try #require(string(login.body["accessToken"]))

            // Search with a typo.
            try await waitUntil(deadline: .seconds(20)) {
                let found = try? await call(fleet, .GET, "/v1/products?q=enamle%20mgu")
                return found?.text.contains("\"id\":\"mug-edge\"") == true
            }
            #expect(try await call(fleet, .GET, "/v1/products/mug-edge").status == 200)
            #expect(try await call(fleet, .GET, "/v1/products/nope").status == 404)

            // Fill the cart, order with an idempotency key, twice: one order.
            let line = try await call(fleet, .PUT, "/v1/cart/lines/mug-edge", json: #"{"quantity": 2}"#, token: token)
            #expect(line.status == 200, "\(line.text)")
            let order = #"{"paymentMethod": "pm_card_visa", "shippingAddress": {"name": "Ada", "line1": "1 Road", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
            let placed = try await call(fleet, .POST, "/v1/orders", json: order, token: token, headers: [("Idempotency-Key", "k-1")])
            #expect(placed.status == 202, "\(placed.text)")
            let location = try #require(placed.headers["Location"].first)
            let again = try await call(fleet, .POST, "/v1/orders", json: order, token: token, headers: [("Idempotency-Key", "k-1")])
            #expect(again.status == 202 && again.headers["Location"].first == location)
            try await waitUntil(deadline: .seconds(30)) {
                string((try? await call(fleet, .GET, location, token: token))?.body["status"]) == "completed"
            }
            let mine = try await call(fleet, .GET, "/v1/orders", token: token)
            if case .array(let items)? = mine.body["items"] { #expect(items.count == 1) } else { Issue.record("no items: \(mine.text)") }
            #expect(try await fleet.stock("MUG-EDGE") == (onHand: 3, reserved: 0))

            // Bad input: each a 4xx problem+json that says what is wrong; never a 5xx.
            let bad: [(HTTPMethod, String, String?, String?, [(String, String)], Int, String)] = [
                (.POST, "/v1/auth/register", #"{"email": "x@y.z", "password": "#, nil, [], 400, "not a JSON object"),
                (.POST, "/v1/auth/register", #"{"email": 42, "password": "correct horse", "name": "A"}"#, nil, [], 422, "email"),
                (.POST, "/v1/auth/register", #"{"email": "a@b.c", "password": "correct horse", "name": "A", "admin": true}"#, nil, [], 422, "unknown field: admin"),
                (.POST, "/v1/auth/register", "{\"name\": \"" + String(repeating: "x", count: 70_000) + "\"}", nil, [], 413, "larger than"),
                (.PUT, "/v1/cart/lines/mug-edge", #"{"quantity": -1}"#, token, [], 422, "quantity must be 1 to 99"),
                (.PUT, "/v1/cart/lines/mug-edge", #"{"quantity": 1000000000000}"#, token, [], 422, "quantity"),
                (.PUT, "/v1/cart/lines/no-such-thing", #"{"quantity": 1}"#, token, [], 422, "no product no-such-thing"),
                (.POST, "/v1/orders", order, nil, [("Idempotency-Key", "k-2")], 401, "signed-in customer"),
                (.POST, "/v1/orders", order, token, [], 422, "Idempotency-Key"),
                (.GET, "/v1/orders", nil, "not-a-token", [], 401, "malformed"),
                (.GET, "/v1/orders/ord-someone-elses", nil, token, [], 404, "no order"),
                (.PUT, "/v1/admin/products/x", #"{"sku": "X", "name": "X", "description": "", "category": "c", "price": {"amount": 1, "currency": "EUR"}}"#, token, [], 403, "admin"),
                (.GET, "/v1/nowhere", nil, nil, [], 404, "no route"),
            ]
            for (method, path, body, bearer, headers, status, detail) in bad {
                let answer = try await call(fleet, method, path, json: body, token: bearer, headers: headers)
                #expect(answer.status == status, "\(method) \(path): \(answer.status) \(answer.text.prefix(300))")
                #expect(answer.isProblem, "\(method) \(path) is not problem+json")
                #expect(string(answer.body["detail"])?.contains(detail) == true, "\(method) \(path): \(answer.text.prefix(300))")
            }
            // Forged and expired tokens.
            let forged = try await AccessTokens(signingKey: AccessTokens.generateSigningKey(kid: "test1")).sign(customerID: "cus-x", email: "x@y.z", role: "admin").token
            let expired = try await CheckoutFleet.signer().sign(customerID: "cus-x", email: "x@y.z", role: "customer",
                                                                                    now: Date().addingTimeInterval(-7200)).token
            #expect(string(try await call(fleet, .GET, "/v1/orders", token: forged).body["detail"])?.contains("signature") == true)
            #expect(string(try await call(fleet, .GET, "/v1/orders", token: expired).body["detail"])?.contains("expired") == true)
            #expect(try await call(fleet, .GET, "/openapi.yaml").text.hasPrefix("openapi: 3.1.0"))

            // Failed logins are slowed down: after three, the next try must wait.
            let target = "eve-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(target)", "password": "right password", "name": "Eve"}"#)
            var statuses: [Int] = []
            for _ in 0..<4 {
                statuses.append(try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(target)", "password": "guess"}"#).status)
            }
            #expect(statuses == [401, 401, 401, 429], "\(statuses)")
            let throttled = try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(target)", "password": "right password"}"#)
            #expect(throttled.status == 429 && Int(throttled.headers["Retry-After"].first ?? "") ?? 0 >= 1)

            // After all that, no secret in any process's log: not the servers' passwords, the
            // gateway's key, the signing key, nor the customers' passwords and tokens.
            let scan = try fleet.secretsInLogs(also: [("a customer's password", "correct horse"), ("a customer's password", "right password"),
                                                      ("an access token", token)] +
                                                     (string(login.body["refreshToken"]).map { [("a refresh token", $0)] } ?? []))
            #expect(scan.leaks.isEmpty, "\(scan.leaks)")
            #expect(scan.secrets >= 10 && scan.scannedBytes > 2_000, "scanned \(scan.scannedBytes) bytes for \(scan.secrets) secrets")
        }
    }

    @Test func aClientOverItsRateGets429WithRetryAfter() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_RATE_LIMIT": "2"]) { fleet in
            var statuses: [Int] = []
            var limited: Answer?
            for _ in 0..<12 {
                let answer = try await call(fleet, .GET, "/v1/products/none")
                statuses.append(answer.status)
                if answer.status == 429 { limited = answer }
            }
            // A burst of 4 goes through (404: no such product), then the bucket is empty.
            #expect(statuses.prefix(4).allSatisfy { $0 == 404 }, "\(statuses)")
            let answer = try #require(limited, "never limited: \(statuses)")
            #expect(answer.isProblem)
            #expect(Int(answer.headers["Retry-After"].first ?? "") ?? 0 >= 1)
            // Health endpoints are on the ops port, never limited, and not on the public one.
            #expect(try await fleet.get("edge", "/healthz").status == 200)
            #expect(try await call(fleet, .GET, "/metrics").status == 404)
            #expect(try await call(fleet, .GET, "/healthz").status == 404)
        }
    }

    @Test func aStoppedBrokerIs503AndTheEdgeRecoversWhenItIsBack() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-503", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 1)])
            #expect(try await call(fleet, .GET, "/v1/products/\(mug.id)").status == 200)
            try await TestServers.whileDown("rabbitmq") {
                try await waitUntil(deadline: .seconds(30)) {
                    (try? await call(fleet, .GET, "/v1/products/\(mug.id)"))?.status == 503
                }
                let down = try await call(fleet, .GET, "/v1/products/\(mug.id)")
                #expect(down.isProblem)
                #expect(string(down.body["detail"])?.contains("broker") == true, "\(down.text)")
                #expect(try await fleet.get("edge", "/readyz").status == 503)
            }
            try await waitUntil(deadline: .seconds(90)) {
                (try? await call(fleet, .GET, "/v1/products/\(mug.id)"))?.status == 200
            }
        }
    }

    @Test func anAdminChangesProductsAndStockAndTheEdgeSeesTheChangesAtOnce() async throws {
        try await CheckoutFleet.with { fleet in
            // An operator makes a registered customer an admin (`shopfleet admin grant`).
            _ = try await call(fleet, .POST, "/v1/auth/register", json: #"{"email": "admin@shopfleet.test", "password": "admin password", "name": "Admin"}"#)
            try await fleet.grantAdmin("admin@shopfleet.test")
            let login = try await call(fleet, .POST, "/v1/auth/login", json: #"{"email": "admin@shopfleet.test", "password": "admin password"}"#)
            let admin = try #require(string(login.body["accessToken"]))
            let product = #"{"sku": "LAMP-ADM", "name": "Oak desk lamp", "description": "Warm light.", "category": "home", "price": {"amount": 6900, "currency": "EUR"}}"#
            #expect(try await call(fleet, .PUT, "/v1/admin/products/lamp-adm", json: product, token: admin).status == 202)
            let delivery = [("Idempotency-Key", "delivery-1")]
            #expect(try await call(fleet, .POST, "/v1/admin/stock/LAMP-ADM", json: #"{"delta": 3, "reason": "delivery"}"#, token: admin,
                                   headers: delivery).status == 202)
            try await waitUntil(deadline: .seconds(20)) { (try? await call(fleet, .GET, "/v1/products/lamp-adm"))?.status == 200 }
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.stock("LAMP-ADM"))?.onHand == 3 }
            // A retry of the same change (its answer lost, say) is the same message: inventory's
            // inbox drops it. Without a key, a relative change cannot be made safely.
            #expect(try await call(fleet, .POST, "/v1/admin/stock/LAMP-ADM", json: #"{"delta": 3, "reason": "delivery"}"#, token: admin,
                                   headers: delivery).status == 202)
            try await waitUntil(deadline: .seconds(20)) {
                (try? await self.metric(fleet, "inventory", "shopfleet_messages_duplicate_total", containing: "inventory.AdjustStock.v1")) == 1
            }
            #expect(try await fleet.stock("LAMP-ADM").onHand == 3)
            let keyless = try await call(fleet, .POST, "/v1/admin/stock/LAMP-ADM", json: #"{"delta": 3, "reason": "delivery"}"#, token: admin)
            #expect(keyless.status == 422 && keyless.text.contains("Idempotency-Key"))
            let reused = try await call(fleet, .POST, "/v1/admin/stock/LAMP-ADM", json: #"{"delta": 5, "reason": "delivery"}"#, token: admin,
                                        headers: delivery)
            #expect(reused.status == 422 && reused.text.contains("another change"))

            // The edge keeps products it read; a change reaches it through the catalog's events.
            let repriced = product.replacing("6900", with: "5900")
            #expect(try await call(fleet, .PUT, "/v1/admin/products/lamp-adm", json: repriced, token: admin).status == 202)
            try await waitUntil(deadline: .seconds(10)) {
                (try? await call(fleet, .GET, "/v1/products/lamp-adm"))?.text.contains("\"amount\":5900") == true
            }
            #expect(try await call(fleet, .POST, "/v1/admin/products/lamp-adm/deactivate", token: admin).status == 202)
            try await waitUntil(deadline: .seconds(10)) { (try? await call(fleet, .GET, "/v1/products/lamp-adm"))?.status == 404 }
            // Off sale: it cannot go into a cart.
            let cart = try await call(fleet, .PUT, "/v1/cart/lines/lamp-adm", json: #"{"quantity": 1}"#, token: admin)
            #expect(cart.status == 422 && cart.isProblem)
        }
    }
}
