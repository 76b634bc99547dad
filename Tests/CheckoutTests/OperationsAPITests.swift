import AsyncHTTPClient
import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import Orders
import PaymentsSandbox
import Sagas
import ShopfleetTesting
import Testing

/// The operations console's API (`/v1/admin/sagas`, `/v1/admin/dead-letters`, `/v1/admin/fleet`)
/// against a whole fleet: the answers come from the orders and dead-letter workers over the broker
/// and from RabbitMQ's management API, and what an operator does through it reaches the saga.
@Suite(.serialized) struct OperationsAPITests {
    let edge = EdgeTests()

    func admin(_ fleet: CheckoutFleet) async throws -> (token: String, email: String) {
        let email = "ops-\(UInt32.random(in: 0...UInt32.max))@example.com"
        _ = try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "correct horse", "name": "Ops"}"#)
        try await fleet.grantAdmin(email)
        let login = try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "correct horse"}"#)
        return (try #require(edge.string(login.body["accessToken"])), email)
    }

    func array(_ value: JSONValue?) -> [JSONValue] { if case .array(let items)? = value { return items }; return [] }
    func object(_ value: JSONValue) -> [String: JSONValue] { if case .object(let fields) = value { return fields }; return [:] }
    func int(_ value: JSONValue?) -> Int? { if case .int(let number)? = value { return number }; return nil }

    /// The gateway fails every call until the authorization is dead-lettered; the console's API
    /// shows the stuck saga with its letter, previews the replay, replays it at a rate once the
    /// gateway works, and the saga completes. A second letter is discarded with a reason.
    @Test func aStuckSagaIsFoundShownReplayedAndALetterDiscarded() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT": "10m", "SHOPFLEET_CHECKOUT_RESEND_AFTER": "10m",
                                                   "SHOPFLEET_CHECKOUT_RESEND_LIMIT": "10m",
                                                   "SHOPFLEET_EDGE_MANAGEMENT_URL": FleetIdentities.withoutUserInfo(try TestServers.managementURL())],
                                     topologyFile: CheckoutFleet.shortRetriesTopologyFile) { fleet in
            let mug = CheckoutFleet.product("MUG-OPS", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let (token, email) = try await admin(fleet)

            // Without a token, 401; a customer's token, 403.
            #expect(try await edge.call(fleet, .GET, "/v1/admin/sagas").status == 401)
            let customer = "cust-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(customer)", "password": "correct horse", "name": "C"}"#)
            let customerLogin = try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(customer)", "password": "correct horse"}"#)
            let customerToken = try #require(edge.string(customerLogin.body["accessToken"]))
            #expect(try await edge.call(fleet, .GET, "/v1/admin/dead-letters/groups", token: customerToken).status == 403)

            var broken = PaymentsSandbox.Faults()
            broken.failureRate = 1
            try await fleet.setFaults(broken)
            let id = try await fleet.placeOrder([(mug, 1)])
            var letterID = ""
            try await waitUntil(deadline: .seconds(60)) { [edge] in
                let answer = try? await edge.call(fleet, .GET, "/v1/admin/dead-letters?saga=\(id)", token: token)
                guard let first = answer.flatMap({ self.array($0.body["items"]).first }) else { return false }
                letterID = edge.string(self.object(first)["id"]) ?? ""
                return true
            }

            let stuck = try await edge.call(fleet, .GET, "/v1/admin/sagas/stuck?olderThan=1ms", token: token)
            #expect(stuck.status == 200, "\(stuck.text)")
            let entry = try #require(array(stuck.body["items"]).map(object).first { edge.string(object($0["saga"] ?? .null)["id"]) == id })
            #expect(int(entry["deadLetters"]) == 1)
            let reason = edge.string(entry["reason"]) ?? ""
            #expect(reason.contains("payments.AuthorizePayment.v1 was dead-lettered") && reason.contains("authorizing_payment"), "\(reason)")

            let saga = try await edge.call(fleet, .GET, "/v1/admin/sagas/\(id)", token: token)
            #expect(saga.status == 200)
            #expect(edge.string(object(saga.body["saga"] ?? .null)["state"]) == "authorizing_payment")
            #expect(array(saga.body["steps"]).contains { edge.string(object($0)["name"]) == AuthorizePayment.type })
            #expect(array(saga.body["deadLetters"]).map { edge.string(object($0)["id"]) } == [letterID])
            #expect(try await edge.call(fleet, .GET, "/v1/admin/sagas/no-such-saga", token: token).status == 404)
            // A retry of no saga is refused here, not dead-lettered by orders behind a 202.
            #expect(try await edge.call(fleet, .POST, "/v1/admin/sagas/no-such-saga/retry", json: #"{"reason": "x"}"#, token: token).status == 404)
            // A duration too long to be one is the caller's mistake, not a crash.
            #expect(try await edge.call(fleet, .GET, "/v1/admin/sagas?olderThan=3000000000000h", token: token).status == 422)
            #expect(try await edge.call(fleet, .GET, "/v1/admin/sagas/stuck?olderThan=9223372036854775807ms", token: token).status == 422)

            let groups = try await edge.call(fleet, .GET, "/v1/admin/dead-letters/groups", token: token)
            let group = try #require(array(groups.body["items"]).map(object).first { edge.string($0["type"]) == AuthorizePayment.type })
            #expect(int(group["count"]) == 1 && edge.string(group["sampleId"]) == letterID)
            let letter = try await edge.call(fleet, .GET, "/v1/admin/dead-letters/\(letterID)", token: token)
            #expect(letter.status == 200)
            #expect((edge.string(letter.body["body"]) ?? "").contains("\"orderID\" : \"\(id)\""), "\(letter.text)")

            // The preview names the letter and sends nothing.
            let preview = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/replay", json: #"{"ids": ["\#(letterID)"], "dryRun": true}"#,
                                              token: token)
            #expect(preview.status == 200)
            #expect(array(preview.body["wouldReplay"]).map { edge.string(object($0)["id"]) } == [letterID])
            #expect(try await fleet.order(id)?.status == "pending")
            let bad = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/replay", json: #"{"ids": ["\#(letterID)"], "fingerprint": "x"}"#,
                                          token: token)
            #expect(bad.status == 422 && bad.isProblem, "\(bad.text)")

            try await fleet.setFaults(PaymentsSandbox.Faults())
            let replay = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/replay", json: #"{"ids": ["\#(letterID)"], "rate": 5}"#,
                                             token: token)
            #expect(replay.status == 202, "\(replay.text)")
            let order = try await fleet.waitForSaga(id, in: ["completed", "cancelled"], deadline: .seconds(60))
            #expect(order.status == "completed")
            #expect(try await fleet.sandboxStats().intentsPerOrder[id] == 1)
            let replayed = try await edge.call(fleet, .GET, "/v1/admin/dead-letters/\(letterID)", token: token)
            #expect(edge.string(object(replayed.body["letter"] ?? .null)["status"]) == "replayed")
            #expect(array(replayed.body["history"]).contains {
                edge.string(object($0)["kind"]) == "replay-requested" && (edge.string(object($0)["detail"]) ?? "").contains(email)
            })
            // Replaying it again without `again` has nothing to do.
            let twice = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/replay", json: #"{"ids": ["\#(letterID)"]}"#, token: token)
            #expect(twice.status == 409, "\(twice.text)")

            // A second letter, discarded with a reason.
            try await fleet.setFaults(broken)
            let second = try await fleet.placeOrder([(mug, 1)])
            var secondLetter = ""
            try await waitUntil(deadline: .seconds(60)) { [edge] in
                let answer = try? await edge.call(fleet, .GET, "/v1/admin/dead-letters?saga=\(second)", token: token)
                guard let first = answer.flatMap({ self.array($0.body["items"]).first }) else { return false }
                secondLetter = edge.string(self.object(first)["id"]) ?? ""
                return true
            }
            let noReason = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/discard", json: #"{"ids": ["\#(secondLetter)"], "reason": " "}"#,
                                               token: token)
            #expect(noReason.status == 422)
            let discard = try await edge.call(fleet, .POST, "/v1/admin/dead-letters/discard",
                                              json: #"{"ids": ["\#(secondLetter)"], "reason": "refunded by hand"}"#, token: token)
            #expect(discard.status == 200 && array(discard.body["discarded"]).count == 1, "\(discard.text)")
            let discarded = try await edge.call(fleet, .GET, "/v1/admin/dead-letters/\(secondLetter)", token: token)
            let note = edge.string(object(discarded.body["letter"] ?? .null)["statusNote"]) ?? ""
            #expect(note.contains("refunded by hand") && note.contains(email), "\(note)")

            // The operator cancels that saga, with a reason kept in its step log.
            try await fleet.setFaults(PaymentsSandbox.Faults())
            let cancel = try await edge.call(fleet, .POST, "/v1/admin/sagas/\(second)/cancel", json: #"{"reason": "customer phoned"}"#, token: token)
            #expect(cancel.status == 202, "\(cancel.text)")
            let cancelled = try await fleet.waitForSaga(second, in: ["cancelled"], deadline: .seconds(60))
            #expect(cancelled.reason?.contains("customer phoned") == true)
            #expect(try await fleet.steps(second).contains { $0.name == "cancel-requested" && ($0.detail ?? "").contains(email) })

            // The fleet as the management API sees it (its figures are sampled every few seconds, so a
            // vhost made moments ago may not show its consumers yet), and the saga definition.
            let view = try await edge.call(fleet, .GET, "/v1/admin/fleet", token: token)
            #expect(view.status == 200, "\(view.text)")
            #expect(array(view.body["queues"]).contains { edge.string(object($0)["name"]) == "orders.commands" })
            var orders: [String: JSONValue] = [:]
            try await waitUntil(deadline: .seconds(30)) { [edge] in
                let view = try? await edge.call(fleet, .GET, "/v1/admin/fleet", token: token)
                orders = view.flatMap { self.array($0.body["workers"]).map(self.object).first { edge.string($0["service"]) == "orders" } } ?? [:]
                return edge.string(orders["state"]) == "running"
            }
            #expect((int(orders["consumers"]) ?? 0) >= 3 && int(orders["queuesConsumed"]) == int(orders["queues"]), "\(orders)")
            let definition = try await edge.call(fleet, .GET, "/v1/admin/sagas/definition", token: token)
            #expect(array(definition.body["states"]).count == Checkout.State.allCases.count)
            #expect(array(definition.body["transitions"]).count == Checkout.edges.count)
            let listed = try await edge.call(fleet, .GET, "/v1/admin/sagas?state=completed&limit=10", token: token)
            #expect(array(listed.body["items"]).map { edge.string(object($0)["id"]) }.contains(id))
            #expect(try await edge.call(fleet, .GET, "/v1/admin/sagas?olderThan=soon", token: token).status == 422)
        }
    }

    /// Retry from the console: the reason and who asked go into the step log.
    @Test func aRetryIsRecordedWithItsReason() async throws {
        try await CheckoutFleet.with { fleet in
            let mug = CheckoutFleet.product("MUG-RETRYOPS", price: 800)
            try await fleet.seed([.init(product: mug, stock: 5)])
            let (token, email) = try await admin(fleet)
            let id = try await fleet.placeOrder([(mug, 1)])
            _ = try await fleet.waitForSaga(id, in: ["completed"], deadline: .seconds(30))
            let empty = try await edge.call(fleet, .POST, "/v1/admin/sagas/\(id)/retry", json: #"{"reason": ""}"#, token: token)
            #expect(empty.status == 422)
            let retry = try await edge.call(fleet, .POST, "/v1/admin/sagas/\(id)/retry", json: #"{"reason": "checking"}"#, token: token)
            #expect(retry.status == 202)
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.steps(id))?.contains { $0.name == "retry-requested" && ($0.detail ?? "").contains("\(email): checking") } == true
            }
        }
    }
}
