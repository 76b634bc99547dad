public import Auth
public import Contracts
import FoundationEssentials
import Logging
public import Messaging
public import PostgresClient

/// Customers and their sessions. Emails are unique (case-insensitively); passwords arrive already
/// hashed (bcrypt, by the edge); refresh tokens are stored as SHA-256 hashes, rotate on every
/// refresh and can be revoked; access tokens are short-lived JWTs the edge verifies by itself.
public enum IdentityService {
    public static let schema = "identity"

    public static let migrations = [
        Migration(version: 100, name: "customers_and_sessions", sql: """
            CREATE TABLE customers (
                id text PRIMARY KEY,
                email text NOT NULL,
                name text NOT NULL,
                password_hash text NOT NULL,
                role text NOT NULL DEFAULT 'customer',
                created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE UNIQUE INDEX customers_email ON customers (lower(email));
            CREATE TABLE refresh_tokens (
                token_hash text PRIMARY KEY,
                customer_id text NOT NULL REFERENCES customers (id),
                expires_at timestamptz NOT NULL,
                revoked_at timestamptz,
                replaced_by text,
                created_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX refresh_tokens_customer ON refresh_tokens (customer_id);
            """),
        // Roles change only by an operator (`shopfleet admin grant|revoke`), each change kept.
        Migration(version: 101, name: "role_changes", sql: """
            CREATE TABLE role_changes (
                id bigserial PRIMARY KEY,
                customer_id text NOT NULL REFERENCES customers (id),
                email text NOT NULL,
                old_role text NOT NULL,
                new_role text NOT NULL,
                changed_by text NOT NULL,
                reason text NOT NULL,
                changed_at timestamptz NOT NULL DEFAULT now()
            );
            """),
    ]

    public struct Settings: Sendable {
        public var tokens: AccessTokens
        public var refreshLifetime: Duration
        public init(tokens: AccessTokens, refreshLifetime: Duration = .seconds(30 * 24 * 3600)) {
            self.tokens = tokens
            self.refreshLifetime = refreshLifetime
        }
    }

    public static func definition(_ settings: Settings, schema: String = schema) -> WorkerDefinition {
        let customers = "\(quoteIdentifier(schema)).customers"
        let refreshTokens = "\(quoteIdentifier(schema)).refresh_tokens"
        var handlers = HandlerRegistry()

        handlers.respond(RegisterCustomer.self) { request, context in
            // Registering never makes an admin: an operator does (`shopfleet admin grant`).
            let role = "customer"
            let inserted = try await context.database.query("""
                INSERT INTO \(customers) (id, email, name, password_hash, role) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT DO NOTHING RETURNING id
                """, [request.customerID, request.email, request.name, request.passwordHash, role])
            guard inserted.count == 1 else {
                return RegisterCustomer.Reply(registered: false, customerID: nil, problem: "email_taken")
            }
            try await context.publish(CustomerRegistered(customerID: request.customerID, email: request.email, name: request.name))
            return RegisterCustomer.Reply(registered: true, customerID: request.customerID, problem: nil)
        }

        handlers.answer(GetCredentials.self) { query, context in
            let rows = try await context.database.query(
                "SELECT id, email, password_hash, role FROM \(customers) WHERE lower(email) = lower($1)", [query.email])
            guard rows.count == 1 else { return nil }
            return GetCredentials.Credentials(customerID: try rows[0].decode(String.self, 0), email: try rows[0].decode(String.self, 1),
                                        passwordHash: try rows[0].decode(String.self, 2), role: try rows[0].decode(String.self, 3))
        }

        /// Stores a refresh token and signs an access token for the customer.
        @Sendable func session(_ customerID: String, refreshTokenHash: String, on database: PostgresConnection) async throws -> Session {
            let rows = try await database.query("SELECT role, email FROM \(customers) WHERE id = $1", [customerID])
            guard rows.count == 1 else { throw PermanentFailure("not-found", "no customer \(customerID)") }
            let role = try rows[0].decode(String.self, 0)
            let email = try rows[0].decode(String.self, 1)
            let expires = try await database.query("""
                INSERT INTO \(refreshTokens) (token_hash, customer_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
                RETURNING expires_at
                """, [refreshTokenHash, customerID, Double(settings.refreshLifetime.components.seconds)])
            let access = try await settings.tokens.sign(customerID: customerID, email: email, role: role)
            return Session(customerID: customerID, role: role, accessToken: access.token,
                           accessTokenExpiresAt: access.expiresAt.formatted(.iso8601),
                           refreshTokenExpiresAt: try expires[0].decode(Date.self, 0).formatted(.iso8601))
        }

        handlers.respond(StartSession.self) { request, context in
            try await session(request.customerID, refreshTokenHash: request.refreshTokenHash, on: context.database)
        }

        handlers.respond(RefreshSession.self) { request, context in
            let rows = try await context.database.query("""
                SELECT customer_id, revoked_at IS NOT NULL, expires_at < now() FROM \(refreshTokens) WHERE token_hash = $1 FOR UPDATE
                """, [request.refreshTokenHash])
            guard rows.count == 1 else { return RefreshSession.Reply(session: nil, problem: "unknown") }
            let customerID = try rows[0].decode(String.self, 0)
            if try rows[0].decode(Bool.self, 1) {
                // A revoked token used again: whoever holds it, the customer's other sessions end too.
                try await context.database.query(
                    "UPDATE \(refreshTokens) SET revoked_at = now() WHERE customer_id = $1 AND revoked_at IS NULL", [customerID])
                context.logger.warning("revoked refresh token reused; every session of the customer ended",
                                       metadata: ["customer_id": .string(customerID)])
                return RefreshSession.Reply(session: nil, problem: "revoked")
            }
            if try rows[0].decode(Bool.self, 2) { return RefreshSession.Reply(session: nil, problem: "expired") }
            try await context.database.query(
                "UPDATE \(refreshTokens) SET revoked_at = now(), replaced_by = $2 WHERE token_hash = $1",
                [request.refreshTokenHash, request.newRefreshTokenHash])
            return RefreshSession.Reply(session: try await session(customerID, refreshTokenHash: request.newRefreshTokenHash, on: context.database),
                                        problem: nil)
        }

        handlers.respond(EndSession.self) { request, context in
            let rows = try await context.database.query(
                "UPDATE \(refreshTokens) SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL RETURNING 1", [request.refreshTokenHash])
            return EndSession.Reply(ended: rows.count == 1)
        }

        return WorkerDefinition(service: "identity", schema: schema, queues: ["identity.queries"], migrations: migrations, handlers: handlers)
    }
}

/// Who may administer the shop, changed by an operator with the database identity that owns or is
/// a member of identity's role — never over the broker, where any service could send the request.
public enum AdminRoles {
    public struct Change: Sendable, Equatable {
        public var customerID: String
        public var email: String
        public var oldRole: String
        public var newRole: String
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Gives `email` the role `role` (`admin` or `customer`), recording who did it and why, in
    /// one transaction. A change to the role it already has is recorded too (and returned as such).
    public static func set(_ role: String, email: String, by actor: String, reason: String, database: PostgresClient,
                           schema: String = IdentityService.schema) async throws -> Change {
        guard role == "admin" || role == "customer" else { throw Failure(description: "no role '\(role)': admin or customer") }
        let customers = "\(quoteIdentifier(schema)).customers"
        let changes = "\(quoteIdentifier(schema)).role_changes"
        return try await database.transaction { tx in
            let rows = try await tx.query("SELECT id, email, role FROM \(customers) WHERE lower(email) = lower($1) FOR UPDATE", [email])
            guard let row = rows.first else { throw Failure(description: "no customer registered with \(email)") }
            let change = Change(customerID: try row.decode(String.self, 0), email: try row.decode(String.self, 1),
                                oldRole: try row.decode(String.self, 2), newRole: role)
            try await tx.query("UPDATE \(customers) SET role = $2 WHERE id = $1", [change.customerID, role])
            try await tx.query("INSERT INTO \(changes) (customer_id, email, old_role, new_role, changed_by, reason) VALUES ($1, $2, $3, $4, $5, $6)",
                               [change.customerID, change.email, change.oldRole, role, actor, reason])
            return change
        }
    }
}
