public import Messaging

// Identity never sees a password or a refresh token: the edge sends a bcrypt hash of the password
// and a SHA-256 of each refresh token, so neither secret is ever stored in a queue.

/// Registers a customer; the reply says whether the email was free.
public struct RegisterCustomer: Query, Contract, Validatable {
    public struct Reply: Codable, Sendable, Equatable {
        public var registered: Bool
        public var customerID: String?
        /// Why not (`email_taken`).
        public var problem: String?
        public init(registered: Bool, customerID: String?, problem: String?) {
            self.registered = registered
            self.customerID = customerID
            self.problem = problem
        }
    }
    public static let type = "identity.RegisterCustomer.v1"
    public static let example = RegisterCustomer(customerID: "cus_0190c2d4", email: "ada@example.com", name: "Ada Lovelace",
                                                 passwordHash: "$2b$10$abcdefghijklmnopqrstuu1234567890abcdefghijklmnopqrstu")
    public var customerID: String
    public var email: String
    public var name: String
    /// bcrypt, made by the edge.
    public var passwordHash: String
    public init(customerID: String, email: String, name: String, passwordHash: String) {
        self.customerID = customerID
        self.email = email
        self.name = name
        self.passwordHash = passwordHash
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(customerID, "customerID")
        try Validation.email(email, "email")
        try Validation.text(name, "name", max: 200)
        guard passwordHash.hasPrefix("$2"), passwordHash.count == 60 else { throw ValidationFailure("passwordHash is not a bcrypt hash") }
    }
}

/// What logging in needs to check a password: the customer and their hash (nil: no such email).
public struct GetCredentials: Query, Contract {
    public typealias Reply = Credentials?
    public struct Credentials: Codable, Sendable, Equatable {
        public var customerID: String
        public var email: String
        public var passwordHash: String
        public var role: String
        public init(customerID: String, email: String, passwordHash: String, role: String) {
            self.customerID = customerID
            self.email = email
            self.passwordHash = passwordHash
            self.role = role
        }
    }
    public static let type = "identity.GetCredentials.v1"
    public static let example = GetCredentials(email: "ada@example.com")
    public var email: String
    public init(email: String) { self.email = email }
}

/// A signed-in session: the access token, and the refresh token's lifetime.
public struct Session: Codable, Sendable, Equatable {
    public var customerID: String
    public var role: String
    public var accessToken: String
    /// ISO 8601.
    public var accessTokenExpiresAt: String
    public var refreshTokenExpiresAt: String
    public init(customerID: String, role: String, accessToken: String, accessTokenExpiresAt: String, refreshTokenExpiresAt: String) {
        self.customerID = customerID
        self.role = role
        self.accessToken = accessToken
        self.accessTokenExpiresAt = accessTokenExpiresAt
        self.refreshTokenExpiresAt = refreshTokenExpiresAt
    }
}

/// Starts a session for a customer whose password the edge has checked; `refreshTokenHash` is the
/// SHA-256 (hex) of the refresh token the edge gives the customer.
public struct StartSession: Query, Contract, Validatable {
    public typealias Reply = Session
    public static let type = "identity.StartSession.v1"
    public static let example = StartSession(customerID: "cus_0190c2d4", refreshTokenHash: String(repeating: "ab", count: 32))
    public var customerID: String
    public var refreshTokenHash: String
    public init(customerID: String, refreshTokenHash: String) {
        self.customerID = customerID
        self.refreshTokenHash = refreshTokenHash
    }
    public func validate() throws(ValidationFailure) {
        try Validation.identifier(customerID, "customerID")
        try Validation.sha256(refreshTokenHash, "refreshTokenHash")
    }
}

/// Trades a refresh token for a new session and a new refresh token (the old one stops working).
public struct RefreshSession: Query, Contract, Validatable {
    public struct Reply: Codable, Sendable, Equatable {
        public var session: Session?
        /// Why not: `unknown`, `revoked`, `expired`.
        public var problem: String?
        public init(session: Session?, problem: String?) {
            self.session = session
            self.problem = problem
        }
    }
    public static let type = "identity.RefreshSession.v1"
    public static let example = RefreshSession(refreshTokenHash: String(repeating: "ab", count: 32), newRefreshTokenHash: String(repeating: "cd", count: 32))
    public var refreshTokenHash: String
    public var newRefreshTokenHash: String
    public init(refreshTokenHash: String, newRefreshTokenHash: String) {
        self.refreshTokenHash = refreshTokenHash
        self.newRefreshTokenHash = newRefreshTokenHash
    }
    public func validate() throws(ValidationFailure) {
        try Validation.sha256(refreshTokenHash, "refreshTokenHash")
        try Validation.sha256(newRefreshTokenHash, "newRefreshTokenHash")
    }
}

/// Logs out: the refresh token is revoked (access tokens lapse on their own, soon).
public struct EndSession: Query, Contract, Validatable {
    public struct Reply: Codable, Sendable, Equatable {
        public var ended: Bool
        public init(ended: Bool) { self.ended = ended }
    }
    public static let type = "identity.EndSession.v1"
    public static let example = EndSession(refreshTokenHash: String(repeating: "ab", count: 32))
    public var refreshTokenHash: String
    public init(refreshTokenHash: String) { self.refreshTokenHash = refreshTokenHash }
    public func validate() throws(ValidationFailure) { try Validation.sha256(refreshTokenHash, "refreshTokenHash") }
}

public struct CustomerRegistered: Event, Contract {
    public static let type = "identity.CustomerRegistered.v1"
    public static let example = CustomerRegistered(customerID: "cus_0190c2d4", email: "ada@example.com", name: "Ada Lovelace")
    public var customerID: String
    public var email: String
    public var name: String
    public init(customerID: String, email: String, name: String) {
        self.customerID = customerID
        self.email = email
        self.name = name
    }
}

extension Validation {
    static func email(_ value: String, _ field: String) throws(ValidationFailure) {
        let at = value.firstIndex(of: "@")
        guard value.count <= 254, let at, at != value.startIndex, value[at...].count > 1,
              !value.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw ValidationFailure("\(field) '\(value.prefix(80))' is not an email address")
        }
    }

    static func sha256(_ value: String, _ field: String) throws(ValidationFailure) {
        guard value.count == 64, value.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw ValidationFailure("\(field) must be 64 lower-case hex digits")
        }
    }
}
