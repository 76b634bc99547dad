import Auth
import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import Messaging
import NIOHTTP1
import PaymentsSandbox
import RabbitManagement
import ShopfleetTesting
import Testing

/// What docs/api.md and openapi.yaml promise of the edge that no other test holds it to, over real
/// HTTP against the running fleet: sessions, carts with and without an account, cancelling, an
/// Idempotency-Key with another body, and the 504 and 503 answers.
@Suite("The HTTP edge: what the docs promise", .serialized)
struct EdgeContractTests {
    let edge = EdgeTests()

    /// Registers a customer with a fresh email and the password "correct horse"; returns the email.
    func register(_ fleet: CheckoutFleet, _ name: String) async throws -> String {
        let email = "\(name.lowercased())-\(UInt32.random(in: 0...UInt32.max))@example.com"
        let answer = try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "correct horse", "name": "\#(name)"}"#)
        #expect(answer.status == 201, "\(answer.text)")
        return email
    }

    func logIn(_ fleet: CheckoutFleet, _ email: String, cartID: String? = nil) async throws -> EdgeTests.Answer {
        let cart = cartID.map { #", "cartId": "\#($0)""# } ?? ""
        return try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "correct horse"\#(cart)}"#)
    }

    func refresh(_ fleet: CheckoutFleet, _ refreshToken: String) async throws -> EdgeTests.Answer {
        try await edge.call(fleet, .POST, "/v1/auth/refresh", json: #"{"refreshToken": "\#(refreshToken)"}"#)
    }

    func detail(_ answer: EdgeTests.Answer) -> String { edge.string(answer.body["detail"]) ?? "" }

    /// A cart answer's lines: product id → quantity.
    func lines(_ answer: EdgeTests.Answer) -> [String: Int] {
        guard case .array(let items)? = answer.body["lines"] else { return [:] }
        var lines: [String: Int] = [:]
        for case .object(let line) in items {
            if case .string(let product)? = line["productID"], case .int(let quantity)? = line["quantity"] { lines[product] = quantity }
        }
        return lines
    }

    /// Sessions: a refresh answers new tokens and retires the refresh token it was given (used
    /// again, that one ends every session of the customer); a logout is 204 and its refresh token
    /// works no more. Carts: without an account the first change starts an anonymous cart named in
    /// `X-Cart-ID`, which is read, changed and, at login with `cartId`, merged into the customer's;
    /// an `X-Cart-ID` the edge did not make is refused, and so is another customer's cart named at
    /// login; `DELETE` takes one line out or empties the cart; a 51st product is a 409, while a
    /// product already in a full cart still changes.
    @Test func sessionsRefreshAndEndAndCartsAreKeptMergedClearedAndLimited() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-CONTRACT", price: 1250)
            let lamp = CheckoutFleet.product("LAMP-CONTRACT", price: 4000)
            let cup = CheckoutFleet.product("CUP-CONTRACT", price: 800)
            let many = (0..<50).map { CheckoutFleet.product("MANY-\($0)", price: 100) }
            try await fleet.seed(([mug, lamp, cup] + many).map { CheckoutFleet.Item(product: $0, stock: 10) })

            // Refresh: new tokens, the old refresh token refused; used again, it ends the new one too.
            let ada = try await register(fleet, "Ada")
            let login = try await logIn(fleet, ada)
            #expect(login.status == 200, "\(login.text)")
            let customer = try #require(edge.string(login.body["customerId"]))
            let first = try #require(edge.string(login.body["refreshToken"]))
            let refreshed = try await refresh(fleet, first)
            #expect(refreshed.status == 200, "\(refreshed.text)")
            #expect(edge.string(refreshed.body["customerId"]) == customer)
            let second = try #require(edge.string(refreshed.body["refreshToken"]))
            #expect(second != first)
            let renewed = try #require(edge.string(refreshed.body["accessToken"]))
            #expect(try await edge.call(fleet, .GET, "/v1/orders", token: renewed).status == 200)
            for (refreshToken, what) in [(first, "the replaced refresh token"), (second, "its successor, once the replaced one was used again")] {
                let refused = try await refresh(fleet, refreshToken)
                #expect(refused.status == 401 && refused.isProblem, "\(what): \(refused.status) \(refused.text)")
                #expect(detail(refused).contains("revoked"), "\(what): \(refused.text)")
            }

            // Logout: 204, again 204; its refresh token no longer works.
            let relogin = try await logIn(fleet, ada)
            let token = try #require(edge.string(relogin.body["accessToken"]))
            let ended = try #require(edge.string(relogin.body["refreshToken"]))
            let logout = try await edge.call(fleet, .POST, "/v1/auth/logout", json: #"{"refreshToken": "\#(ended)"}"#)
            #expect(logout.status == 204, "\(logout.text)")
            #expect(try await edge.call(fleet, .POST, "/v1/auth/logout", json: #"{"refreshToken": "\#(ended)"}"#).status == 204)
            let afterLogout = try await refresh(fleet, ended)
            #expect(afterLogout.status == 401 && detail(afterLogout).contains("revoked"), "\(afterLogout.status) \(afterLogout.text)")

            // Without an account the first change starts an anonymous cart, named in X-Cart-ID.
            let started = try await edge.call(fleet, .PUT, "/v1/cart/lines/\(mug.id)", json: #"{"quantity": 2}"#)
            #expect(started.status == 200, "\(started.text)")
            let anonymous = try #require(started.headers["X-Cart-ID"].first)
            #expect(anonymous.hasPrefix("anon-") && anonymous.count == 37, "\(anonymous)")
            #expect(edge.string(started.body["cartID"]) == anonymous && lines(started) == [mug.id: 2], "\(started.text)")
            let named = [("X-Cart-ID", anonymous)]
            for product in [lamp, cup] {
                let added = try await edge.call(fleet, .PUT, "/v1/cart/lines/\(product.id)", json: #"{"quantity": 1}"#, headers: named)
                #expect(added.status == 200 && added.headers["X-Cart-ID"].first == anonymous, "\(added.text)")
            }
            let removed = try await edge.call(fleet, .DELETE, "/v1/cart/lines/\(cup.id)", headers: named)
            #expect(removed.status == 200 && lines(removed) == [mug.id: 2, lamp.id: 1], "\(removed.text)")
            let read = try await edge.call(fleet, .GET, "/v1/cart", headers: named)
            #expect(read.status == 200 && lines(read) == [mug.id: 2, lamp.id: 1], "\(read.text)")
            // Only a cart id this edge gave: not a customer's cart, say.
            let someone = try await edge.call(fleet, .GET, "/v1/cart", headers: [("X-Cart-ID", Cart.id(customer: customer))])
            #expect(someone.status == 422 && someone.isProblem, "\(someone.status) \(someone.text)")
            #expect(detail(someone).contains("X-Cart-ID must be a cart id this edge gave"), "\(someone.text)")
            // No cart at all: an empty one to read, and no line to take out.
            let none = try await edge.call(fleet, .GET, "/v1/cart")
            #expect(none.status == 200 && lines(none).isEmpty && none.headers["X-Cart-ID"].isEmpty, "\(none.text)")
            let nothing = try await edge.call(fleet, .DELETE, "/v1/cart/lines/\(mug.id)")
            #expect(nothing.status == 404 && detail(nothing).contains("there is no cart"), "\(nothing.status) \(nothing.text)")

            // At login the anonymous cart joins the customer's (quantities add up) and is emptied.
            let own = try await edge.call(fleet, .PUT, "/v1/cart/lines/\(mug.id)", json: #"{"quantity": 1}"#, token: token)
            #expect(own.status == 200 && edge.string(own.body["cartID"]) == Cart.id(customer: customer), "\(own.text)")
            #expect(own.headers["X-Cart-ID"].isEmpty)
            let merging = try await logIn(fleet, ada, cartID: anonymous)
            #expect(merging.status == 200, "\(merging.text)")
            let merged = try await edge.call(fleet, .GET, "/v1/cart", token: token)
            #expect(lines(merged) == [mug.id: 3, lamp.id: 1], "\(merged.text)")
            let emptied = try await edge.call(fleet, .GET, "/v1/cart", headers: named)
            #expect(emptied.status == 200 && lines(emptied).isEmpty, "\(emptied.text)")
            // Another customer's cart is no anonymous cart: naming it at login takes nothing from it.
            let eve = try await register(fleet, "Eve")
            let naming = try await logIn(fleet, eve, cartID: Cart.id(customer: customer))
            let kept = try await edge.call(fleet, .GET, "/v1/cart", token: token)
            #expect(lines(kept) == [mug.id: 3, lamp.id: 1], "Eve's login naming Ada's cart (\(naming.status)) left her: \(kept.text)")
            #expect(naming.status == 422 && detail(naming).contains("cartId"), "\(naming.text)")

            // DELETE /v1/cart empties it.
            let cleared = try await edge.call(fleet, .DELETE, "/v1/cart", token: token)
            #expect(cleared.status == 200 && lines(cleared).isEmpty, "\(cleared.text)")
            let clearedRead = try await edge.call(fleet, .GET, "/v1/cart", token: token)
            #expect(clearedRead.status == 200 && lines(clearedRead).isEmpty, "\(clearedRead.text)")

            // 50 products at most: the 51st is a 409; a product already in the full cart still changes.
            var statuses: [Int] = []
            for product in many {
                statuses.append(try await edge.call(fleet, .PUT, "/v1/cart/lines/\(product.id)", json: #"{"quantity": 1}"#, token: token).status)
            }
            #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
            let full = try await edge.call(fleet, .PUT, "/v1/cart/lines/\(mug.id)", json: #"{"quantity": 1}"#, token: token)
            #expect(full.status == 409 && full.isProblem, "\(full.status) \(full.text)")
            #expect(detail(full).contains("already holds 50 products"), "\(full.text)")
            let changed = try await edge.call(fleet, .PUT, "/v1/cart/lines/\(many[0].id)", json: #"{"quantity": 5}"#, token: token)
            #expect(changed.status == 200 && lines(changed).count == 50 && lines(changed)[many[0].id] == 5, "\(changed.text)")
        }
    }

    /// An Idempotency-Key is one order: the same key with another body is a 422 and places
    /// nothing, while a key whose order was refused (an empty cart: 409) is free again.
    /// `POST /v1/orders/{id}/cancel` is 202 for the order's customer (404 for another, 401 without
    /// a token, its body optional) and the saga cancels the order, its authorization held in the
    /// gateway meanwhile, with the reason given.
    @Test func aKeyIsOneOrderAndACustomerCancelsTheirOwnOrder() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-CANCEL", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let ada = try await register(fleet, "Ada")
            let login = try await logIn(fleet, ada)
            let token = try #require(edge.string(login.body["accessToken"]))
            let customer = try #require(edge.string(login.body["customerId"]))
            let order = #"{"paymentMethod": "pm_card_visa", "shippingAddress": {"name": "Ada", "line1": "1 Road", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
            let elsewhere = #"{"paymentMethod": "pm_card_visa", "shippingAddress": {"name": "Ada", "line1": "2 Other Road", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
            let key = [("Idempotency-Key", "cancel-1")]

            // An empty cart: 409, nothing placed, so the key may name the next order.
            let empty = try await edge.call(fleet, .POST, "/v1/orders", json: order, token: token, headers: key)
            #expect(empty.status == 409 && empty.isProblem && detail(empty).contains("the cart is empty"), "\(empty.status) \(empty.text)")
            #expect(try await edge.call(fleet, .PUT, "/v1/cart/lines/\(mug.id)", json: #"{"quantity": 2}"#, token: token).status == 200)
            try await fleet.setFaults(CheckoutFlowTests.holding)
            let placed = try await edge.call(fleet, .POST, "/v1/orders", json: elsewhere, token: token, headers: key)
            #expect(placed.status == 202, "\(placed.text)")
            let id = try #require(edge.string(placed.body["orderId"]))
            // The same key with another body: 422, and still one order.
            let reused = try await edge.call(fleet, .POST, "/v1/orders", json: order, token: token, headers: key)
            #expect(reused.status == 422 && reused.isProblem, "\(reused.status) \(reused.text)")
            #expect(detail(reused).contains("this Idempotency-Key was used for another order"), "\(reused.text)")
            try await CheckoutFlowTests.waitUntilHeld(fleet)
            #expect(try await fleet.count("SELECT count(*) FROM orders.orders WHERE customer_id = $1", [customer]) == 1)

            // Only its customer cancels it.
            let eve = try await register(fleet, "Eve")
            let eveLogin = try await logIn(fleet, eve)
            let eveToken = try #require(edge.string(eveLogin.body["accessToken"]))
            let notHers = try await edge.call(fleet, .POST, "/v1/orders/\(id)/cancel", json: #"{"reason": "mine now"}"#, token: eveToken)
            #expect(notHers.status == 404 && detail(notHers).contains("no order \(id) of yours"), "\(notHers.status) \(notHers.text)")
            let anonymous = try await edge.call(fleet, .POST, "/v1/orders/\(id)/cancel", json: #"{"reason": "mine now"}"#)
            #expect(anonymous.status == 401 && anonymous.isProblem, "\(anonymous.status) \(anonymous.text)")
            // The body is optional (openapi.yaml: requestBody required: false); an HTTP client sends
            // a POST without one with Content-Length: 0.
            let bodiless = try await edge.call(fleet, .POST, "/v1/orders/ord-no-such-order/cancel", token: token)
            #expect(bodiless.status == 404, "a cancel without a body: \(bodiless.status) \(bodiless.text)")

            let cancel = try await edge.call(fleet, .POST, "/v1/orders/\(id)/cancel", json: #"{"reason": "changed my mind"}"#, token: token)
            #expect(cancel.status == 202, "\(cancel.text)")
            #expect(edge.string(cancel.body["orderId"]) == id && edge.string(cancel.body["status"]) == "cancel requested", "\(cancel.text)")
            #expect(cancel.headers["Location"].first == "/v1/orders/\(id)")
            try await fleet.waitForSaga(id, in: ["voiding_payment", "releasing_stock", "cancelled"], deadline: .seconds(20))
            try await fleet.setFaults(PaymentsSandbox.Faults())
            try await fleet.waitForSaga(id, in: CheckoutFlowTests.terminal, deadline: .seconds(40))
            try await waitUntil(deadline: .seconds(20)) {
                edge.string((try? await edge.call(fleet, .GET, "/v1/orders/\(id)", token: token))?.body["status"]) == "cancelled"
            }
            let seen = try await edge.call(fleet, .GET, "/v1/orders/\(id)", token: token)
            #expect(edge.string(seen.body["statusReason"])?.contains("changed my mind") == true, "\(seen.text)")
            #expect(try await fleet.stock("MUG-CANCEL") == (onHand: 5, reserved: 0))
        }
    }

    /// A query its service does not answer (the cart worker stopped) is a 504 after
    /// SHOPFLEET_EDGE_QUERY_TIMEOUT, and answered again once the worker is back. Without Redis,
    /// login and registration are 503 with `Retry-After` (they fail closed) while reads go on (the
    /// request limit fails open). A command the broker does not take (its queue gone: returned, not
    /// confirmed) is a 503 with `Retry-After`, never a 202.
    @Test func anUnansweredQueryIs504AndWhatCannotBeDoneSafelyIs503WithRetryAfter() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_QUERY_TIMEOUT": "2s"]) { fleet in
            let mug = CheckoutFleet.product("MUG-5XX", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 1)])
            let ada = try await register(fleet, "Ada")
            let login = try await logIn(fleet, ada)
            let token = try #require(edge.string(login.body["accessToken"]))

            await fleet.supervisor.stop("cart")
            let late = try await edge.call(fleet, .GET, "/v1/cart", token: token)
            #expect(late.status == 504 && late.isProblem, "\(late.status) \(late.text)")
            #expect(detail(late).contains("the cart service did not answer within"), "\(late.text)")
            try fleet.supervisor.start("cart")
            try await fleet.waitReady("cart")
            let back = try await edge.call(fleet, .GET, "/v1/cart", token: token)
            #expect(back.status == 200, "\(back.status) \(back.text)")

            try await TestServers.whileDown("redis") {
                let paused = try await logIn(fleet, ada)
                #expect(paused.status == 503 && paused.isProblem, "\(paused.status) \(paused.text)")
                #expect(paused.headers["Retry-After"].first == "5")
                #expect(detail(paused).contains("logins are paused"), "\(paused.text)")
                let registration = try await edge.call(fleet, .POST, "/v1/auth/register",
                                                       json: #"{"email": "late-\#(UInt32.random(in: 0...UInt32.max))@example.com", "password": "correct horse", "name": "Late"}"#)
                #expect(registration.status == 503 && registration.isProblem, "\(registration.status) \(registration.text)")
                #expect(registration.headers["Retry-After"].first == "5")
                #expect(detail(registration).contains("registration is paused"), "\(registration.text)")
                let product = try await edge.call(fleet, .GET, "/v1/products/\(mug.id)")
                #expect(product.status == 200, "\(product.status) \(product.text)")
            }
            try await waitUntil(deadline: .seconds(30)) { (try? await logIn(fleet, ada))?.status == 200 }

            // 202 once the broker confirmed the command; with its queue gone the broker returns it
            // instead, and the edge answers 503 rather than accept what went nowhere.
            let admin = try await CheckoutFleet.signer().sign(customerID: "cus-operator", email: "operator@example.com", role: "admin").token
            let lamp = #"{"sku": "LAMP-CONFIRM", "name": "Oak desk lamp", "description": "Warm light.", "category": "home", "price": {"amount": 6900, "currency": "EUR"}}"#
            let accepted = try await edge.call(fleet, .PUT, "/v1/admin/products/lamp-confirm", json: lamp, token: admin)
            #expect(accepted.status == 202, "\(accepted.status) \(accepted.text)")
            await fleet.supervisor.stop("catalog")
            try await fleet.sandbox.management.deleteQueue(UpsertProduct.queue, vhost: fleet.sandbox.vhost)
            let refused = try await edge.call(fleet, .PUT, "/v1/admin/products/lamp-confirm", json: lamp, token: admin)
            #expect(refused.status == 503 && refused.isProblem, "\(refused.status) \(refused.text)")
            #expect(refused.headers["Retry-After"].first == "5")
            #expect(detail(refused).contains("the message broker did not confirm the catalog command"), "\(refused.text)")
        }
    }
}
