import ArgumentParser
public import Auth
import Identity
import Messaging
import Notifications
import Payments
public import WorkerHost

/// The three domains that need more than the runtime: an HTTP client with TLS (payments calls
/// the payment gateway, notifications posts webhooks) and token signing (identity). They run as
/// `shopfleet-worker-ext`, which links those libraries and no web framework, CLI or benchmark.
public enum ServiceDomains {
    public static let table: [String: WorkerDomain] = [
        "identity": WorkerDomain(schema: IdentityService.schema, migrations: IdentityService.migrations) { config in try await identity(config) },
        "notifications": WorkerDomain(schema: NotificationsService.schema, migrations: NotificationsService.migrations) { config in
            try notifications(config)
        },
        "payments": WorkerDomain(schema: PaymentsService.schema, migrations: PaymentsService.migrations) { config in
            let key = config.value(ShopfleetConfiguration.paymentsAPIKey)
            guard !key.isEmpty else {
                throw ValidationError("the payments worker needs SHOPFLEET_PAYMENTS_API_KEY (or SHOPFLEET_PAYMENTS_API_KEY_FILE), the gateway's secret key")
            }
            return PaymentsService.definition(gateway: PaymentGateway(configuration: .init(
                baseURL: config.value(ShopfleetConfiguration.paymentsURL), apiKey: key)))
        },
    ]

    /// The executable that runs them, built beside `shopfleet`.
    public static let executableName = "shopfleet-worker-ext"

    static func notifications(_ config: ShopfleetConfiguration) throws -> WorkerDefinition {
        let webhook = config.value(ShopfleetConfiguration.webhookURL)
        let secret = config.value(ShopfleetConfiguration.webhookSecret)
        if !webhook.isEmpty, secret.isEmpty {
            throw ValidationError("SHOPFLEET_WEBHOOK_URL is set but SHOPFLEET_WEBHOOK_SECRET is not: webhook calls must be signed")
        }
        let smtp: SMTPClient
        do {
            smtp = try SMTPClient(url: config.value(ShopfleetConfiguration.smtpURL))
        } catch {
            throw ValidationError("SHOPFLEET_SMTP_URL: \(error)")
        }
        return NotificationsService.definition(.init(smtp: smtp, from: config.value(ShopfleetConfiguration.mailFrom),
                                                     webhookURL: webhook.isEmpty ? nil : webhook, webhookSecret: secret))
    }

    /// Identity's access tokens: it signs with its private key.
    public static func signingTokens(_ config: ShopfleetConfiguration) async throws -> AccessTokens {
        let key = config.value(ShopfleetConfiguration.jwtSigningKey)
        guard !key.isEmpty else {
            throw ValidationError("SHOPFLEET_JWT_SIGNING_KEY (or SHOPFLEET_JWT_SIGNING_KEY_FILE) is not set: identity's Ed25519 key access tokens are signed with")
        }
        do {
            return try await AccessTokens(signingKey: key, lifetime: try config.duration(ShopfleetConfiguration.accessTokenTTL))
        } catch let invalid as AccessTokens.Invalid {
            throw ValidationError(invalid.description)
        }
    }

    /// The edge's access tokens: it verifies with identity's public keys and cannot sign.
    public static func verifyingTokens(_ config: ShopfleetConfiguration) async throws -> AccessTokens {
        do {
            return try await AccessTokens(publicKeys: config.value(ShopfleetConfiguration.jwtPublicKeys))
        } catch let invalid as AccessTokens.Invalid {
            throw ValidationError(invalid.description)
        }
    }

    static func identity(_ config: ShopfleetConfiguration) async throws -> WorkerDefinition {
        IdentityService.definition(.init(tokens: try await signingTokens(config)))
    }
}
