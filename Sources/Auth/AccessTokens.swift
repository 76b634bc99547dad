import ClientRuntime
public import FoundationEssentials
import Crypto
import HummingbirdBcrypt
import JWTKit

/// Short-lived access tokens: JWTs signed with HMAC-SHA256 under a secret the identity worker
/// (which signs) and the edge (which verifies, without asking anyone) share.
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
        var role: String
        var email: String

        func verify(using algorithm: some JWTAlgorithm) throws {
            try exp.verifyNotExpired()
            guard iss.value == AccessTokens.issuer else { throw JWTError.claimVerificationFailure(failedClaim: iss, reason: "not ours") }
        }
    }

    static let issuer = "shopfleet-identity"
    private let keys: JWTKeyCollection
    public let lifetime: Duration

    /// - Parameter secret: at least 32 bytes; `SHOPFLEET_JWT_SECRET`.
    public init(secret: String, lifetime: Duration = .seconds(900)) async throws {
        guard secret.utf8.count >= 32 else {
            throw Invalid(description: "the access token secret must be at least 32 bytes (SHOPFLEET_JWT_SECRET)")
        }
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.lifetime = lifetime
    }

    public func sign(customerID: String, email: String, role: String, now: Date = Date()) async throws -> (token: String, expiresAt: Date) {
        let expires = now.addingTimeInterval(Double(lifetime.components.seconds))
        let payload = Payload(sub: SubjectClaim(value: customerID), exp: ExpirationClaim(value: expires), iat: IssuedAtClaim(value: now),
                              iss: IssuerClaim(value: Self.issuer), role: role, email: email)
        return (try await keys.sign(payload), expires)
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
                throw Invalid(description: "the access token is malformed")
            }
        } catch {
            throw Invalid(description: "the access token is malformed")
        }
    }
}

/// bcrypt for passwords, on threads of its own: a hash takes a good fraction of a second of CPU
/// by design, which must not stall Swift's cooperative pool.
public final class PasswordHasher: Sendable {
    private let threads: [ConnectionThread]
    public let cost: UInt8

    public init(threads count: Int = 2, cost: UInt8 = 10) {
        threads = (0..<max(1, count)).map { ConnectionThread(name: "bcrypt-\($0)", spin: .zero) }
        self.cost = cost
    }

    deinit { for thread in threads { thread.stop() } }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await threads.randomElement()!.submit { Bcrypt.hash(password, cost: cost) }
    }

    public func verify(_ password: String, against hash: String) async throws -> Bool {
        try await threads.randomElement()!.submit { Bcrypt.verify(password, hash: hash) }
    }
}

/// Refresh tokens: random, given to the customer once; only their SHA-256 is stored or sent.
public enum RefreshTokens {
    /// 32 random bytes, base64url without padding.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64EncodedString().replacing("+", with: "-").replacing("/", with: "_").replacing("=", with: "")
    }

    /// Lower-case hex SHA-256 of the token.
    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).lowercaseHex
    }
}
