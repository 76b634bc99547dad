import Auth
import Crypto
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
            // Registering never makes an admin, whatever the address; an operator does.
            #expect(try await queries.ask(GetCredentials(email: "admin@shopfleet.test"))?.role == "customer")
            try await fleet.grantAdmin("admin@shopfleet.test")
            #expect(try await queries.ask(GetCredentials(email: "admin@shopfleet.test"))?.role == "admin")
            #expect(try await fleet.count("SELECT count(*) FROM identity.role_changes WHERE email = 'admin@shopfleet.test' AND new_role = 'admin' AND changed_by = 'test operator'") == 1)
            // Taken back, also recorded; an address nobody registered is a clear error.
            let revoked = try await ChildProcess.check([CheckoutFleet.binary, "admin", "revoke", "admin@shopfleet.test", "--reason", "left the team"],
                                                       extraEnvironment: fleet.environment)
            #expect(revoked.contains("admin → customer"), "\(revoked)")
            #expect(try await queries.ask(GetCredentials(email: "admin@shopfleet.test"))?.role == "customer")
            #expect(try await fleet.count("SELECT count(*) FROM identity.role_changes WHERE email = 'admin@shopfleet.test'") == 2)
            let unknown = try await ChildProcess.run(["/bin/sh", "-c", #""$0" admin grant nobody@example.com 2>&1"#, CheckoutFleet.binary],
                                                     extraEnvironment: fleet.environment)
            #expect(unknown.status != 0 && unknown.output.contains("no customer registered with nobody@example.com"), "\(unknown.output)")

            // A session: an access token the edge verifies alone, a refresh token only hashed.
            let tokens = try await CheckoutFleet.verifier()
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
        let signer = try await CheckoutFleet.signer()
        let tokens = try await CheckoutFleet.verifier()
        // Another key under the same id; a key the edge does not know.
        let other = try await AccessTokens(signingKey: AccessTokens.generateSigningKey(kid: "test1"))
        let forged = try await other.sign(customerID: "cus-eve", email: "eve@example.com", role: "admin").token
        let unknownKey = try await AccessTokens(signingKey: AccessTokens.generateSigningKey(kid: "elsewhere")).sign(customerID: "cus-eve", email: "e@x.y", role: "admin").token
        let expired = try await signer.sign(customerID: "cus-ada", email: "ada@example.com", role: "customer", now: Date().addingTimeInterval(-3600)).token
        for (token, reason) in [(forged, "signature"), (expired, "expired"), (unknownKey, "known key"), ("not.a.jwt", "malformed"), ("", "malformed")] {
            do {
                _ = try await tokens.verify(token)
                Issue.record("\(reason) token accepted")
            } catch let invalid as AccessTokens.Invalid {
                #expect(invalid.description.contains(reason), "\(invalid)")
            }
        }
        #expect(try await tokens.verify(try await signer.sign(customerID: "cus-ada", email: "a@b.c", role: "customer").token).customerID == "cus-ada")
        for bad in ["short", "k1:", ":AAAA", "k1:not-base64!"] {
            await #expect(throws: AccessTokens.Invalid.self) { _ = try await AccessTokens(signingKey: bad) }
            await #expect(throws: AccessTokens.Invalid.self) { _ = try await AccessTokens(publicKeys: bad) }
        }
        // The edge's verifier holds public keys only: it cannot sign.
        await #expect(throws: AccessTokens.Invalid.self) { _ = try await tokens.sign(customerID: "cus-eve", email: "e@x.y", role: "admin") }
    }

    /// Tokens an attacker can make without identity's private key: HS256 with the public key (the
    /// edge's only key material) as the HMAC secret, `alg: none`, a right signature with the wrong
    /// audience or issuer. Each is refused.
    @Test func algorithmConfusionAndWrongAudienceAreRefused() async throws {
        let tokens = try await CheckoutFleet.verifier()
        let publicX = String(CheckoutFleet.publicKeys.split(separator: ":")[1])
        let now = Int(Date().timeIntervalSince1970)
        func claims(aud: String = AccessTokens.audience, iss: String = AccessTokens.issuer) -> String {
            #"{"sub":"cus-eve","email":"eve@example.com","role":"admin","iat":\#(now),"exp":\#(now + 600),"iss":"\#(iss)","aud":["\#(aud)"]}"#
        }
        func b64(_ data: Data) -> String {
            data.base64EncodedString().replacing("+", with: "-").replacing("/", with: "_").replacing("=", with: "")
        }
        func hs256(_ header: String, _ payload: String, key: Data) -> String {
            let input = b64(Data(header.utf8)) + "." + b64(Data(payload.utf8))
            let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: SymmetricKey(data: key))
            return input + "." + b64(Data(mac))
        }
        let confusedRaw = hs256(#"{"alg":"HS256","typ":"JWT","kid":"test1"}"#, claims(), key: Data(base64URL: publicX)!)
        let confusedText = hs256(#"{"alg":"HS256","typ":"JWT","kid":"test1"}"#, claims(), key: Data(publicX.utf8))
        let none = b64(Data(#"{"alg":"none","typ":"JWT","kid":"test1"}"#.utf8)) + "." + b64(Data(claims().utf8)) + "."
        for (name, token) in [("HS256 keyed with the public key", confusedRaw), ("HS256 keyed with its text", confusedText), ("alg none", none)] {
            await #expect(throws: AccessTokens.Invalid.self, "\(name) accepted") { _ = try await tokens.verify(token) }
        }
        // Signed by identity's real key but for someone else, or by someone else's name.
        let key = try #require(Data(base64URL: String(CheckoutFleet.signingKey.split(separator: ":")[1])))
        let privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: key)
        func ed25519(_ payload: String) throws -> String {
            let input = b64(Data(#"{"alg":"EdDSA","typ":"JWT","kid":"test1"}"#.utf8)) + "." + b64(Data(payload.utf8))
            return input + "." + b64(try privateKey.signature(for: Data(input.utf8)))
        }
        #expect(try await tokens.verify(try ed25519(claims())).role == "admin", "the hand-made token is otherwise right")
        for (name, token) in [("wrong aud", try ed25519(claims(aud: "someone-else"))), ("wrong iss", try ed25519(claims(iss: "evil")))] {
            await #expect(throws: AccessTokens.Invalid.self, "\(name) accepted") { _ = try await tokens.verify(token) }
        }
    }
}

extension Data {
    init?(base64URL text: String) {
        var base64 = text.replacing("-", with: "+").replacing("_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }
}
