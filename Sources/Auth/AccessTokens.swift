import ClientRuntime
public import FoundationEssentials
import Crypto
import HummingbirdBcrypt
import JWTKit
import Synchronization

/// Short-lived access tokens: JWTs signed with Ed25519 (EdDSA) by the identity worker, which alone
/// holds a private key (`SHOPFLEET_JWT_SIGNING_KEY`), and verified by the edge with public keys only
/// (`SHOPFLEET_JWT_PUBLIC_KEYS`): the edge cannot mint a token. Each key has an id (`kid`, in the
/// token's header); the edge accepts any key of its set, so a new signing key is rolled out by
/// adding its public key to the edge first, then switching identity, then dropping the old one.
///
/// `iss` must be `shopfleet-identity` and `aud` include `shopfleet-edge`. A token of another
/// algorithm (HS256 signed with the public key as an HMAC secret, `none`) or with an unknown
/// `kid` does not verify.
///
/// Keys are written `<kid>:<base64url of the 32-byte key>`: the signing key is the private key's
/// seed, the public keys its `x` (as in a JWK), comma-separated.
public struct AccessTokens: Sendable {
    /// What an access token says.
    public struct Claims: Sendable, Equatable {
        public var customerID: String
        public var email: String
        public var role: String
        public var expiresAt: Date
        public init(customerID: String, email: String, role: String, expiresAt: Date) {
            self.customerID = customerID
            self.email = email
            self.role = role
            self.expiresAt = expiresAt
        }
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    struct Payload: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iat: IssuedAtClaim
        var iss: IssuerClaim
        var aud: AudienceClaim
        var role: String
        var email: String

        func verify(using algorithm: some JWTAlgorithm) throws {
            try exp.verifyNotExpired()
            guard iss.value == AccessTokens.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not ours") }
            try aud.verifyIntendedAudience(includes: AccessTokens.audience)
        }
    }

    public static let issuer = "shopfleet-identity"
    public static let audience = "shopfleet-edge"
    private let keys: JWTKeyCollection
    /// The key id tokens are signed with; nil for a verifier.
    public let signingKeyID: String?
    public let lifetime: Duration

    /// A signer (identity): `signingKey` is `<kid>:<base64url seed>`.
    public init(signingKey: String, lifetime: Duration = .seconds(900)) async throws {
        let (kid, bytes) = try Self.parse(signingKey, what: "SHOPFLEET_JWT_SIGNING_KEY")
        let key: Curve25519.Signing.PrivateKey
        do { key = try Curve25519.Signing.PrivateKey(rawRepresentation: bytes) } catch {
            throw Invalid(description: "SHOPFLEET_JWT_SIGNING_KEY is not an Ed25519 private key (32 bytes, base64url)")
        }
        keys = JWTKeyCollection()
        await keys.add(eddsa: EdDSA.PrivateKey(backing: key), kid: JWKIdentifier(string: kid))
        // Its own tokens verify too (tests, `shopfleet token`).
        signingKeyID = kid
        self.lifetime = lifetime
    }

    /// A verifier (the edge): `publicKeys` is `<kid>:<base64url x>[,<kid>:<base64url x>…]`.
    public init(publicKeys: String) async throws {
        let entries = publicKeys.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
        guard !entries.isEmpty else {
            throw Invalid(description: "SHOPFLEET_JWT_PUBLIC_KEYS is empty: the edge needs identity's public key(s) to verify access tokens")
        }
        keys = JWTKeyCollection()
        for entry in entries {
            let (kid, bytes) = try Self.parse(entry, what: "SHOPFLEET_JWT_PUBLIC_KEYS")
            let key: Curve25519.Signing.PublicKey
            do { key = try Curve25519.Signing.PublicKey(rawRepresentation: bytes) } catch {
                throw Invalid(description: "SHOPFLEET_JWT_PUBLIC_KEYS: key '\(kid)' is not an Ed25519 public key (32 bytes, base64url)")
            }
            await keys.add(eddsa: EdDSA.PublicKey(backing: key), kid: JWKIdentifier(string: kid))
        }
        // A token must name its key: no default to fall back on.
        await keys.clearDefault()
        signingKeyID = nil
        lifetime = .seconds(900)
    }

    static func parse(_ text: String, what: String) throws -> (kid: String, bytes: Data) {
        guard let colon = text.firstIndex(of: ":") else {
            throw Invalid(description: "\(what) must be <kid>:<base64url key>")
        }
        let kid = String(text[..<colon])
        guard !kid.isEmpty, kid.utf8.count <= 64, let bytes = Data(base64URL: String(text[text.index(after: colon)...])), bytes.count == 32 else {
            throw Invalid(description: "\(what) must be <kid>:<base64url of 32 bytes>")
        }
        return (kid, bytes)
    }

    /// A new signing key `<kid>:<seed>`.
    public static func generateSigningKey(kid: String) -> String {
        kid + ":" + Curve25519.Signing.PrivateKey().rawRepresentation.base64URL
    }

    /// The public key `<kid>:<x>` of a signing key, for the edge.
    public static func publicKey(of signingKey: String) throws -> String {
        let (kid, bytes) = try parse(signingKey, what: "the signing key")
        guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: bytes) else {
            throw Invalid(description: "the signing key is not an Ed25519 private key")
        }
        return kid + ":" + key.publicKey.rawRepresentation.base64URL
    }

    public func sign(customerID: String, email: String, role: String, now: Date = Date()) async throws -> (token: String, expiresAt: Date) {
        guard let signingKeyID else { throw Invalid(description: "this process holds public keys only: it cannot sign access tokens") }
        let expires = now.addingTimeInterval(Double(lifetime.components.seconds))
        let payload = Payload(sub: SubjectClaim(value: customerID), exp: ExpirationClaim(value: expires), iat: IssuedAtClaim(value: now),
                              iss: IssuerClaim(value: Self.issuer), aud: AudienceClaim(value: [Self.audience]), role: role, email: email)
        return (try await keys.sign(payload, kid: JWKIdentifier(string: signingKeyID)), expires)
    }

    /// The claims of a token this fleet signed and that has not expired; ``Invalid`` otherwise,
    /// saying why (forged, expired, malformed) without echoing the token.
    public func verify(_ token: String) async throws -> Claims {
        do {
            let payload = try await keys.verify(token, as: Payload.self)
            return Claims(customerID: payload.sub.value, email: payload.email, role: payload.role, expiresAt: payload.exp.value)
        } catch let error as JWTError {
            switch error.errorType {
            case .claimVerificationFailure:
                throw Invalid(description: error.failedClaim is ExpirationClaim ? "the access token has expired" : "the access token is not valid")
            case .signatureVerificationFailed:
                throw Invalid(description: "the access token's signature does not verify")
            default:
                throw Invalid(description: "the access token is malformed or names no known key")
            }
        } catch {
            throw Invalid(description: "the access token is malformed or names no known key")
        }
    }
}

extension Data {
    /// base64url without padding.
    var base64URL: String {
        base64EncodedString().replacing("+", with: "-").replacing("/", with: "_").replacing("=", with: "")
    }

    init?(base64URL text: String) {
        var base64 = text.replacing("-", with: "+").replacing("_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }
}

/// bcrypt for passwords, on threads of its own: a hash takes a good fraction of a second of CPU
/// by design, which must not stall Swift's cooperative pool. At most `threads` hashes run at once
/// and at most `maximumWaiting` wait; beyond that ``Busy`` is thrown at once, so a flood of logins
/// cannot queue unbounded work (or memory) in the edge.
public final class PasswordHasher: Sendable {
    private let threads: [ConnectionThread]
    public let cost: UInt8
    public let maximumWaiting: Int
    private let inFlight = Atomic<Int>(0)
    /// A hash of a password nobody knows, checked when a login names no account, so that an
    /// unknown email costs the same bcrypt work as a known one. Made on a bcrypt thread the
    /// first time it is needed, not at start-up on whatever thread makes the hasher.
    private let decoy = Mutex<String?>(nil)

    /// Too much password work is waiting; try again shortly.
    public struct Busy: Error, CustomStringConvertible, Sendable {
        public var description: String { "too many password checks are waiting; try again shortly" }
    }

    public init(threads count: Int = 2, cost: UInt8 = 10, maximumWaiting: Int = 64) {
        threads = (0..<max(1, count)).map { ConnectionThread(name: "bcrypt-\($0)", spin: .zero) }
        self.cost = cost
        self.maximumWaiting = maximumWaiting
    }

    deinit { for thread in threads { thread.stop() } }

    private func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async throws -> T {
        let (_, now) = inFlight.add(1, ordering: .relaxed)
        defer { inFlight.subtract(1, ordering: .relaxed) }
        guard now <= threads.count + maximumWaiting else { throw Busy() }
        return try await threads.randomElement()!.submit(work)
    }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await run { Bcrypt.hash(password, cost: cost) }
    }

    public func verify(_ password: String, against hash: String) async throws -> Bool {
        try await run { Bcrypt.verify(password, hash: hash) }
    }

    /// The work of a check against an account that does not exist; always false.
    public func verifyAgainstNoAccount(_ password: String) async throws -> Bool {
        _ = try await run { [self] in
            let hash = decoy.withLock { hash in
                if hash == nil { hash = Bcrypt.hash(RefreshTokens.generate(), cost: cost) }
                return hash!
            }
            return Bcrypt.verify(password, hash: hash)
        }
        return false
    }
}

/// Refresh tokens: random, given to the customer once; only their SHA-256 is stored or sent.
public enum RefreshTokens {
    /// 32 random bytes, base64url without padding.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64URL
    }

    /// Lower-case hex SHA-256 of the token.
    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).lowercaseHex
    }
}
