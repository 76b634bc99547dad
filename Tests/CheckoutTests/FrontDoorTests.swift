import AsyncHTTPClient
import Auth
import ClientRuntime
import Fleet
import FoundationEssentials
import Messaging
import NIOHTTP1
import ShopfleetTesting
import Testing

/// The edge's front door against the running fleet: throttles that hold under parallel attempts,
/// no account enumeration by work done, limits keyed on the real client, floods of forged tokens
/// limited like anything else.
@Suite("The front door", .serialized)
struct FrontDoorTests {
    let edge = EdgeTests()

    /// Parallel wrong passwords for one account: at most the free attempts are checked, every other
    /// one is refused before its password is looked at; an unknown email does the same bcrypt work.
    @Test func parallelGuessesNeverExceedTheThrottleAndUnknownEmailsCostTheSame() async throws {
        try await CheckoutFleet.with { fleet in
            let email = "target-\(UInt32.random(in: 0...UInt32.max))@example.com"
            #expect(try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "right password", "name": "T"}"#).status == 201)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<12 {
                    group.addTask {
                        try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "guess \#(i)"}"#).status
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 401 }.count == 3, "\(statuses.sorted())")
            #expect(statuses.filter { $0 == 429 }.count == 9, "\(statuses.sorted())")

            // An email nobody registered: the same answer, and bcrypt ran against a decoy hash.
            let before = try await edge.metric(fleet, "edge", "shopfleet_edge_login_unknown_email_total", containing: "")
            let unknown = try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "nobody-\#(UInt32.random(in: 0...UInt32.max))@example.com", "password": "whatever1"}"#)
            #expect(unknown.status == 401 && edge.string(unknown.body["detail"]) == "the email or the password is wrong")
            try await waitUntil(deadline: .seconds(10)) {
                (try? await edge.metric(fleet, "edge", "shopfleet_edge_login_unknown_email_total", containing: "")) == before + 1
            }

            // Successful logins never count against the client (an office behind one address):
            // more of them than the client's failure allowance all get in. (The first version
            // counted every attempt; the long chaos run's 40 customers on 127.0.0.1 found it.)
            let colleague = "colleague-\(UInt32.random(in: 0...UInt32.max))@example.com"
            #expect(try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(colleague)", "password": "right password", "name": "C"}"#).status == 201)
            var logins: [Int] = []
            for _ in 0..<35 {
                logins.append(try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(colleague)", "password": "right password"}"#).status)
            }
            #expect(logins.allSatisfy { $0 == 200 }, "\(logins)")
        }
    }

    /// Registrations per client are limited; the limit and the login throttle are keyed on the
    /// peer, which an untrusted client cannot change with `X-Forwarded-For`.
    @Test func registrationIsLimitedAndASpoofedForwardedForChangesNothing() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR": "2"]) { fleet in
            var statuses: [Int] = []
            for i in 0..<4 {
                // Each from a "different" address, as a spoofing client would claim.
                let answer = try await edge.call(fleet, .POST, "/v1/auth/register",
                                                 json: #"{"email": "r\#(i)-\#(UInt32.random(in: 0...UInt32.max))@example.com", "password": "a password", "name": "R"}"#,
                                                 headers: [("X-Forwarded-For", "203.0.113.\(i + 1)")])
                statuses.append(answer.status)
            }
            #expect(statuses == [201, 201, 429, 429], "\(statuses)")
        }
    }

    /// Behind a trusted proxy (the Ingress, here 127.0.0.1), the client is the address the proxy
    /// appended: clients behind it get a limit each, and what a client wrote before the proxy's
    /// entry does not count.
    @Test func behindATrustedProxyEachClientHasItsOwnLimit() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR": "1", "SHOPFLEET_EDGE_TRUSTED_PROXIES": "127.0.0.1, ::1"]) { fleet in
            func register(_ forwarded: String) async throws -> Int {
                try await edge.call(fleet, .POST, "/v1/auth/register",
                                    json: #"{"email": "p-\#(UInt32.random(in: 0...UInt32.max))@example.com", "password": "a password", "name": "P"}"#,
                                    headers: [("X-Forwarded-For", forwarded)]).status
            }
            var statuses: [Int] = []
            for forwarded in ["198.51.100.1", "198.51.100.2", "198.51.100.1",
                              // A client claiming another address in front of its own is still itself.
                              "198.51.100.7, 198.51.100.1"] {
                statuses.append(try await register(forwarded))
            }
            #expect(statuses == [201, 201, 429, 429], "\(statuses)")
        }
    }

    /// Requests with forged tokens are counted by the rate limit like any other: a flood of them
    /// gets 429, not an unlimited stream of signature checks answered 401.
    @Test func aFloodOfForgedTokensIsRateLimited() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_RATE_LIMIT": "2"]) { fleet in
            let forged = try await AccessTokens(signingKey: AccessTokens.generateSigningKey(kid: "test1")).sign(customerID: "cus-x", email: "x@y.z", role: "admin").token
            var statuses: [Int] = []
            for _ in 0..<10 { statuses.append(try await edge.call(fleet, .GET, "/v1/orders", token: forged).status) }
            #expect(statuses.prefix(4).allSatisfy { $0 == 401 }, "\(statuses)")
            #expect(statuses.contains(429), "\(statuses)")
        }
    }
}
