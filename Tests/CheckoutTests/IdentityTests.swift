import Auth
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import Testing

/// Identity as the edge will use it: registration, credentials, sessions with rotating refresh
/// tokens, access tokens the edge verifies by itself.
@Suite("Identity", .serialized)
struct IdentityTests {
    @Test func registerLogInRefreshAndLogOut() async throws {
        try await CheckoutFleet.with { fleet in
            let queries = try await QueryClient(connection: fleet.amqp)
            let hasher = PasswordHasher(threads: 1, cost: 4)
            let hash = try await hasher.hash("correct horse battery staple")

            let first = try await queries.ask(RegisterCustomer(customerID: "cus-ada", email: "Ada@Example.com", name: "Ada", passwordHash: hash))
            #expect(first == .init(registered: true, customerID: "cus-ada", problem: nil))
            // Emails are unique whatever their case.
            let again = try await queries.ask(RegisterCustomer(customerID: "cus-other", email: "ada@example.COM", name: "Eve", passwordHash: hash))
            #expect(again == .init(registered: false, customerID: nil, problem: "email_taken"))
            _ = try await queries.ask(RegisterCustomer(customerID: "cus-admin", email: "admin@shopfleet.test", name: "Admin", passwordHash: hash))

            let credentials = try #require(try await queries.ask(GetCredentials(email: "ada@example.com")))
            #expect(credentials.customerID == "cus-ada")
            #expect(try await hasher.verify("correct horse battery staple", against: credentials.passwordHash))
            #expect(!(try await hasher.verify("wrong", against: credentials.passwordHash)))
            #expect(try await queries.ask(GetCredentials(email: "nobody@example.com")) == nil)
            #expect(try await queries.ask(GetCredentials(email: "admin@shopfleet.test"))?.role == "admin")

            // A session: an access token the edge verifies alone, a refresh token only hashed.
            let tokens = try await AccessTokens(secret: CheckoutFleet.jwtSecret)
            let refresh = RefreshTokens.generate()
            let session = try await queries.ask(StartSession(customerID: "cus-ada", refreshTokenHash: RefreshTokens.hash(refresh)))
            let claims = try await tokens.verify(session.accessToken)
            #expect(claims.customerID == "cus-ada" && claims.role == "customer" && claims.email == "Ada@Example.com")
            #expect(try await fleet.count("SELECT count(*) FROM identity.refresh_tokens WHERE token_hash = $1", [RefreshTokens.hash(refresh)]) == 1)

            // Refreshing rotates: the new token works, the old one is refused, and reusing it
            // ends every session of the customer (it may have been stolen).
            let next = RefreshTokens.generate()
            let refreshed = try await queries.ask(RefreshSession(refreshTokenHash: RefreshTokens.hash(refresh), newRefreshTokenHash: RefreshTokens.hash(next)))
            #expect(refreshed.problem == nil)
            #expect(try await tokens.verify(try #require(refreshed.session).accessToken).customerID == "cus-ada")
            let reused = try await queries.ask(RefreshSession(refreshTokenHash: RefreshTokens.hash(refresh), newRefreshTokenHash: RefreshTokens.hash(RefreshTokens.generate())))
            #expect(reused == .init(session: nil, problem: "revoked"))
            let afterTheft = try await queries.ask(RefreshSession(refreshTokenHash: RefreshTokens.hash(next), newRefreshTokenHash: RefreshTokens.hash(RefreshTokens.generate())))
            #expect(afterTheft.problem == "revoked")

            // Log out.
            let fresh = RefreshTokens.generate()
            _ = try await queries.ask(StartSession(customerID: "cus-ada", refreshTokenHash: RefreshTokens.hash(fresh)))
            #expect(try await queries.ask(EndSession(refreshTokenHash: RefreshTokens.hash(fresh))).ended)
            #expect(!(try await queries.ask(EndSession(refreshTokenHash: RefreshTokens.hash(fresh))).ended))
            #expect(try await queries.ask(RefreshSession(refreshTokenHash: RefreshTokens.hash("never-issued"),
                                                         newRefreshTokenHash: RefreshTokens.hash(RefreshTokens.generate()))).problem == "unknown")
        }
    }

    @Test func forgedExpiredAndMalformedTokensAreRefusedWithTheReason() async throws {
        let tokens = try await AccessTokens(secret: CheckoutFleet.jwtSecret)
        let other = try await AccessTokens(secret: String(repeating: "x", count: 40))
        let forged = try await other.sign(customerID: "cus-eve", email: "eve@example.com", role: "admin").token
        let expired = try await tokens.sign(customerID: "cus-ada", email: "ada@example.com", role: "customer", now: Date().addingTimeInterval(-3600)).token
        for (token, reason) in [(forged, "signature"), (expired, "expired"), ("not.a.jwt", "malformed"), ("", "malformed")] {
            do {
                _ = try await tokens.verify(token)
                Issue.record("\(reason) token accepted")
            } catch let invalid as AccessTokens.Invalid {
                #expect(invalid.description.contains(reason), "\(invalid)")
            }
        }
        await #expect(throws: AccessTokens.Invalid.self) { _ = try await AccessTokens(secret: "short") }
    }
}
