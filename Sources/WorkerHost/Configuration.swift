public import ArgumentParser
import ClientRuntime
import FoundationEssentials
import Messaging

/// The configuration every Shopfleet process shares, read from the environment; command-line flags
/// override it. Each key may instead be given as `<KEY>_FILE`, the path of a file holding the value
/// (a mounted Kubernetes secret), so that secrets stay out of the environment listing too.
///
/// | key | type | default |
/// |---|---|---|
/// | `SHOPFLEET_AMQP_URL` | `amqp://user:password@host:port/vhost?heartbeat=30` | `amqp://guest:guest@127.0.0.1:5672/%2F` |
/// | `SHOPFLEET_AMQP_MANAGEMENT_URL` | `http://user:password@host:port` (RabbitMQ management API) | `http://guest:guest@127.0.0.1:15672` |
/// | `SHOPFLEET_DATABASE_URL` | `postgres://user:password@host:port/database` | `postgres://shopfleet@127.0.0.1:5432/shopfleet` |
/// | `SHOPFLEET_REDIS_URL` | `redis://[:password@]host:port/db` | `redis://127.0.0.1:6379/0` |
/// | `SHOPFLEET_HTTP_PORT` | port of /healthz, /readyz, /metrics (every process, the edge too) | `9090` |
/// | `SHOPFLEET_BIND_ADDRESS` | the address every port listens on (`0.0.0.0` in a pod) | `127.0.0.1` |
/// | `SHOPFLEET_TOPOLOGY_FILE` | path | `topology/shopfleet.yaml` |
/// | `SHOPFLEET_WORKER_PREFETCH` | 1…65535 | `1` |
/// | `SHOPFLEET_WORKER_CONCURRENCY` | 1…1024 | `8` |
/// | `SHOPFLEET_WORKER_BATCH` | 1…1000: messages a consumer handles in one transaction (1: one each) | `16` |
/// | `SHOPFLEET_WORKER_BATCH_WAIT` | duration: how long a consumer waits for a batch to fill (`0s`: only what is waiting) | `0s` |
/// | `SHOPFLEET_WORKER_BATCH_LOCK_TIMEOUT` | duration, under the shutdown deadline: how long a batch's handlers wait for a row lock before the batch goes back to one transaction per message | `100ms` |
/// | `SHOPFLEET_WORKER_BATCH_FIRST_LOCKS_TIMEOUT` | duration, under the shutdown deadline: how long a batch waits for the locks it takes first, in one order (inventory's stock rows, the orders worker's sagas) | `5s` |
/// | `SHOPFLEET_LOG_LEVEL` | log level | `info` |
/// | `SHOPFLEET_PAYMENTS_URL` | `http(s)://host:port` of a Stripe-compatible gateway | `http://127.0.0.1:12111` (`shopfleet payments-sandbox`) |
/// | `SHOPFLEET_PAYMENTS_API_KEY` | the gateway's secret key | none: the payments worker and the sandbox need it |
/// | `SHOPFLEET_SMTP_URL` | `smtp://[user:password@]host:port` | `smtp://127.0.0.1:2525` (the SMTP sink of `make run`) |
/// | `SHOPFLEET_MAIL_FROM` | a mail address | `Shopfleet <orders@shopfleet.local>` |
/// | `SHOPFLEET_WEBHOOK_URL` | where notifications POST order events | none (no webhooks) |
/// | `SHOPFLEET_WEBHOOK_SECRET` | HMAC-SHA256 key signing webhook calls | none |
/// | `SHOPFLEET_JWT_SIGNING_KEY` | identity's Ed25519 key, `<kid>:<base64url seed>` (`shopfleet keys generate`) | none: identity needs it |
/// | `SHOPFLEET_JWT_PUBLIC_KEYS` | `<kid>:<base64url x>[,…]`: the public keys the edge accepts | none: the edge needs it |
/// | `SHOPFLEET_ACCESS_TOKEN_TTL` | duration | `15m` |
/// | `SHOPFLEET_FLEET_SECRET` | the operator's secret every service's broker and database password derives from (32 bytes or more) | none: one identity for all |
/// | `SHOPFLEET_EDGE_PORT` | port of the HTTP edge | `8080` |
/// | `SHOPFLEET_EDGE_RATE_LIMIT` | requests a second per client (bursts of twice that) | `50` |
/// | `SHOPFLEET_EDGE_TRUSTED_PROXIES` | addresses or CIDR ranges of the proxies in front of the edge (the Ingress), whose `X-Forwarded-For` names the client | none: the peer is the client |
/// | `SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR` | accounts one client may register in an hour | `20` |
/// | `SHOPFLEET_EDGE_QUERY_TIMEOUT` | duration: how long the edge waits for a service's answer before a 504 | `5s` |
/// | `SHOPFLEET_OPENAPI_FILE` | path of the OpenAPI document the edge serves | `openapi.yaml` |
/// | `SHOPFLEET_CART_TTL` | duration: a cart not touched for this long is gone | `168h` (a week) |
/// | `SHOPFLEET_CHECKOUT_RESEND_AFTER` | duration (`500ms`, `30s`, `2m`): a saga step with no answer is sent again after this, then after twice as long each time | `10s` |
/// | `SHOPFLEET_CHECKOUT_RESEND_LIMIT` | duration: the longest wait between two sends of a step | `1m` |
/// | `SHOPFLEET_CHECKOUT_RESERVE_TIMEOUT` | duration: give up on inventory and cancel | `5m` |
/// | `SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT` | duration: give up on an authorization, void and cancel | `5m` |
/// | `SHOPFLEET_CHECKOUT_STEP_TIMEOUT` | duration: give up on any other step | `5m` |
/// | `SHOPFLEET_CHECKOUT_RESERVATION_TTL` | duration | `15m` |
///
/// Values holding passwords are printed only redacted (`ServerURL.redact`).
///
/// Where neither a flag nor the environment sets a key, the local fleet's file is read:
/// `SHOPFLEET_ENV_FILE`, by default `shopfleet.env` in `SHOPFLEET_DEV_DIR` (`.shopfleet/dev` in the
/// current folder), which
/// `make run` (`shopfleet dev`) writes, so that every command run beside it needs no setup.
public struct ShopfleetConfiguration: Sendable {
    public struct Key: Sendable {
        public var name: String
        public var defaultValue: String
        public var summary: String
    }

    public static let amqpURL = Key(name: "SHOPFLEET_AMQP_URL", defaultValue: "amqp://guest:guest@127.0.0.1:5672/%2F",
                             summary: "RabbitMQ for messages (AMQP 0-9-1); ?heartbeat=<s>&connection_timeout=<ms>")
    public static let amqpManagementURL = Key(name: "SHOPFLEET_AMQP_MANAGEMENT_URL", defaultValue: "http://guest:guest@127.0.0.1:15672",
                                       summary: "RabbitMQ management API, for topology apply/diff")
    public static let databaseURL = Key(name: "SHOPFLEET_DATABASE_URL", defaultValue: "postgres://shopfleet@127.0.0.1:5432/shopfleet",
                                 summary: "PostgreSQL; each service uses its own schema")
    public static let redisURL = Key(name: "SHOPFLEET_REDIS_URL", defaultValue: "redis://127.0.0.1:6379/0",
                              summary: "Redis, for carts and rate limits")
    public static let httpPort = Key(name: "SHOPFLEET_HTTP_PORT", defaultValue: "9090",
                              summary: "port of /healthz, /readyz and /metrics (every process; the edge's is apart from its public port)")
    public static let bindAddress = Key(name: "SHOPFLEET_BIND_ADDRESS", defaultValue: "127.0.0.1",
                                 summary: "the address every port listens on; 0.0.0.0 in a pod")
    public static let edgeTrustedProxies = Key(name: "SHOPFLEET_EDGE_TRUSTED_PROXIES", defaultValue: "",
                                        summary: "comma-separated addresses or CIDR ranges of the proxies in front of the edge; their X-Forwarded-For names the client")
    public static let edgeRegistrationsPerHour = Key(name: "SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR", defaultValue: "20",
                                              summary: "accounts one client may register in an hour")
    public static let topologyFile = Key(name: "SHOPFLEET_TOPOLOGY_FILE", defaultValue: "topology/shopfleet.yaml",
                                  summary: "the authored topology; workers read retry tiers and dead letters from it")
    public static let workerPrefetch = Key(name: "SHOPFLEET_WORKER_PREFETCH", defaultValue: "1",
                                    summary: "unacknowledged deliveries per consumer (each consumer handles one at a time)")
    public static let workerConcurrency = Key(name: "SHOPFLEET_WORKER_CONCURRENCY", defaultValue: "8",
                                       summary: "handlers in flight per queue")
    public static let workerBatch = Key(name: "SHOPFLEET_WORKER_BATCH", defaultValue: "16",
                                 summary: "messages a consumer handles in one transaction (group commit); 1 handles each alone")
    public static let workerBatchWait = Key(name: "SHOPFLEET_WORKER_BATCH_WAIT", defaultValue: "0s",
                                     summary: "how long a consumer waits for more messages before handling a batch; 0s takes only those already waiting")
    public static let workerBatchLockTimeout = Key(name: "SHOPFLEET_WORKER_BATCH_LOCK_TIMEOUT", defaultValue: Topology.durationText(WorkerOptions.defaultBatchLockTimeout),
                                            summary: "how long a batch's handlers wait for a row lock before the batch goes back to one transaction per message")
    public static let workerBatchFirstLocksTimeout = Key(name: "SHOPFLEET_WORKER_BATCH_FIRST_LOCKS_TIMEOUT", defaultValue: Topology.durationText(WorkerOptions.defaultBeforeBatchLockTimeout),
                                                  summary: "how long a batch waits for the locks it takes first, in one order (inventory's stock rows, the orders worker's sagas)")
    public static let logLevel = Key(name: "SHOPFLEET_LOG_LEVEL", defaultValue: "info",
                              summary: "trace, debug, info, notice, warning, error or critical; logs are JSON lines on stderr")
    public static let paymentsURL = Key(name: "SHOPFLEET_PAYMENTS_URL", defaultValue: "http://127.0.0.1:12111",
                                 summary: "the Stripe-compatible payment gateway (the payments worker)")
    public static let paymentsAPIKey = Key(name: "SHOPFLEET_PAYMENTS_API_KEY", defaultValue: "",
                                    summary: "the gateway's secret key (payments worker, payments-sandbox); never logged")
    public static let smtpURL = Key(name: "SHOPFLEET_SMTP_URL", defaultValue: "smtp://127.0.0.1:2525",
                             summary: "the mail server notifications send through")
    public static let mailFrom = Key(name: "SHOPFLEET_MAIL_FROM", defaultValue: "Shopfleet <orders@shopfleet.local>",
                              summary: "the From of customer emails")
    public static let webhookURL = Key(name: "SHOPFLEET_WEBHOOK_URL", defaultValue: "",
                                summary: "where notifications POST order events (signed); empty: no webhooks")
    public static let webhookSecret = Key(name: "SHOPFLEET_WEBHOOK_SECRET", defaultValue: "",
                                   summary: "the HMAC-SHA256 key of X-Shopfleet-Signature on webhook calls")
    public static let jwtSigningKey = Key(name: "SHOPFLEET_JWT_SIGNING_KEY", defaultValue: "",
                                   summary: "identity's Ed25519 signing key, <kid>:<base64url seed>; identity only")
    public static let jwtPublicKeys = Key(name: "SHOPFLEET_JWT_PUBLIC_KEYS", defaultValue: "",
                                   summary: "the Ed25519 public keys the edge verifies access tokens with, <kid>:<base64url x>[,…]")
    public static let fleetSecret = Key(name: "SHOPFLEET_FLEET_SECRET", defaultValue: "",
                                 summary: "the operator's secret each service's broker and database password derives from; never a service's")
    public static let accessTokenTTL = Key(name: "SHOPFLEET_ACCESS_TOKEN_TTL", defaultValue: "15m",
                                    summary: "how long an access token is good for")
    public static let edgePort = Key(name: "SHOPFLEET_EDGE_PORT", defaultValue: "8080", summary: "port of the HTTP edge")
    public static let edgeRateLimit = Key(name: "SHOPFLEET_EDGE_RATE_LIMIT", defaultValue: "50",
                                   summary: "requests a second per client at the edge (bursts of twice that)")
    public static let edgeQueryTimeout = Key(name: "SHOPFLEET_EDGE_QUERY_TIMEOUT", defaultValue: "5s",
                                      summary: "how long the edge waits for a service's answer before it answers 504")
    public static let openAPIFile = Key(name: "SHOPFLEET_OPENAPI_FILE", defaultValue: "openapi.yaml",
                                 summary: "the OpenAPI document the edge serves at /openapi.yaml")
    public static let webRoot = Key(name: "SHOPFLEET_WEB_ROOT", defaultValue: "web",
                             summary: "the storefront and the console (static files) the edge serves at / and /console")
    public static let edgeManagementURL = Key(name: "SHOPFLEET_EDGE_MANAGEMENT_URL", defaultValue: "",
                                       summary: "the RabbitMQ management API the console's fleet view reads, without credentials (the edge signs in as its own broker user, tagged management); empty: no fleet view")
    public static let cartTTL = Key(name: "SHOPFLEET_CART_TTL", defaultValue: "168h",
                             summary: "a cart not touched for this long is gone")
    public static let checkoutResendAfter = Key(name: "SHOPFLEET_CHECKOUT_RESEND_AFTER", defaultValue: "10s",
                                         summary: "a checkout step with no answer is sent again after this, then after twice as long each time")
    public static let checkoutResendLimit = Key(name: "SHOPFLEET_CHECKOUT_RESEND_LIMIT", defaultValue: "1m",
                                         summary: "the longest wait between two sends of a checkout step")
    public static let checkoutReserveTimeout = Key(name: "SHOPFLEET_CHECKOUT_RESERVE_TIMEOUT", defaultValue: "5m",
                                            summary: "how long the checkout saga waits for inventory (sending again meanwhile) before it cancels")
    public static let checkoutPaymentTimeout = Key(name: "SHOPFLEET_CHECKOUT_PAYMENT_TIMEOUT", defaultValue: "5m",
                                            summary: "how long the checkout saga waits for an authorization (asking again meanwhile) before it voids and cancels")
    public static let checkoutStepTimeout = Key(name: "SHOPFLEET_CHECKOUT_STEP_TIMEOUT", defaultValue: "5m",
                                         summary: "how long the checkout saga waits on any other step (sending again meanwhile) before it gives up")
    public static let checkoutReservationTTL = Key(name: "SHOPFLEET_CHECKOUT_RESERVATION_TTL", defaultValue: "15m",
                                            summary: "how long inventory holds an order's stock before releasing it by itself")
    public static let keys = [amqpURL, amqpManagementURL, databaseURL, redisURL, httpPort, bindAddress, topologyFile, workerPrefetch,
                       workerConcurrency, workerBatch, workerBatchWait, workerBatchLockTimeout, workerBatchFirstLocksTimeout, logLevel, paymentsURL, paymentsAPIKey, smtpURL, mailFrom, webhookURL, webhookSecret, jwtSigningKey, jwtPublicKeys, accessTokenTTL, fleetSecret, edgePort, edgeRateLimit, edgeTrustedProxies, edgeRegistrationsPerHour, edgeQueryTimeout, openAPIFile, webRoot, edgeManagementURL, cartTTL, checkoutResendAfter, checkoutResendLimit, checkoutReserveTimeout, checkoutPaymentTimeout,
                       checkoutStepTimeout, checkoutReservationTTL]
    /// Keys whose value is a secret as a whole: shown only as set or not.
    public static let secretKeys: Set<String> = [paymentsAPIKey.name, webhookSecret.name, jwtSigningKey.name, fleetSecret.name]

    public enum Source: String, Sendable { case flag, environment, file, local = "local fleet file", `default` }

    /// The file `shopfleet dev` writes with the local fleet's settings.
    public static var localFleetFile: String {
        ProcessInfo.processInfo.environment["SHOPFLEET_ENV_FILE"] ?? devDirectory + "/shopfleet.env"
    }

    /// This process's environment.
    public static var processEnvironment: [String: String] { ProcessInfo.processInfo.environment }

    /// Where `shopfleet dev` keeps the local fleet's state: `SHOPFLEET_DEV_DIR`, by default `.shopfleet/dev`.
    public static var devDirectory: String { ProcessInfo.processInfo.environment["SHOPFLEET_DEV_DIR"] ?? ".shopfleet/dev" }

    /// The configuration of this process: flags, the environment, the local fleet's file, defaults.
    public static func current(overrides: [String: String?] = [:]) throws -> ShopfleetConfiguration {
        try ShopfleetConfiguration(overrides: overrides, localFile: localFleetFile)
    }

    /// `KEY=value` lines; blank lines and `#` comments are skipped.
    public static func readEnvironmentFile(_ path: String) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else { return [:] }
        var values: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let text = line.trimmingPrefix(" ")
            guard !text.hasPrefix("#"), let equals = text.firstIndex(of: "=") else { continue }
            values[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return values
    }

    public private(set) var values: [String: (value: String, source: Source)] = [:]

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public init(environment: [String: String] = ShopfleetConfiguration.processEnvironment, overrides: [String: String?] = [:],
         localFile: String? = nil) throws {
        let local = localFile.map(Self.readEnvironmentFile) ?? [:]
        for key in Self.keys {
            if let flag = overrides[key.name] ?? nil {
                values[key.name] = (flag, .flag)
            } else if let path = environment[key.name + "_FILE"] {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw Invalid(description: "\(key.name)_FILE names \(path), which cannot be read")
                }
                let text = String(decoding: data, as: UTF8.self).trimmed()
                values[key.name] = (text, .file)
            } else if let value = environment[key.name], !value.isEmpty {
                values[key.name] = (value, .environment)
            } else if let value = local[key.name], !value.isEmpty {
                values[key.name] = (value, .local)
            } else {
                values[key.name] = (key.defaultValue, .default)
            }
        }
    }

    public func value(_ key: Key) -> String { values[key.name]!.value }
    public func source(_ key: Key) -> Source { values[key.name]!.source }

    public var amqpURL: String { value(Self.amqpURL) }
    public var amqpManagementURL: String { value(Self.amqpManagementURL) }
    public var databaseURL: String { value(Self.databaseURL) }
    public var redisURL: String { value(Self.redisURL) }

    /// A duration such as `500ms`, `30s` or `2m`, or an error naming the key.
    public func duration(_ key: Key) throws -> Duration {
        guard let ms = Topology.milliseconds(value(key)) else {
            throw Invalid(description: "\(key.name) must be a duration such as 500ms, 30s or 2m, not '\(value(key))'")
        }
        return .milliseconds(ms)
    }

    /// A lock timeout: a duration (``duration(_:)`` refuses 0, which PostgreSQL would read as no
    /// timeout at all) under a worker's shutdown deadline (a batch waiting for a lock must not hold
    /// up a stop), or an error naming the key.
    public func lockTimeout(_ key: Key) throws -> Duration {
        let timeout = try duration(key)
        let deadline = WorkerOptions.defaultShutdownDeadline
        guard timeout < deadline else {
            throw Invalid(description: "\(key.name) must be from 1ms to under the shutdown deadline (\(deadline.components.seconds)s), not '\(value(key))'")
        }
        return timeout
    }

    /// A whole number in `range`, or an error naming the key.
    public func integer(_ key: Key, in range: ClosedRange<Int>) throws -> Int {
        guard let n = Int(value(key)), range.contains(n) else {
            throw Invalid(description: "\(key.name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(value(key))'")
        }
        return n
    }
}

/// The flags every command that talks to the servers takes. They override the environment; prefer
/// the environment (or `_FILE`) for URLs holding passwords, since a command line is visible to
/// every user of the machine.
public struct ConnectionOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(name: .customLong("amqp-url"), help: "Overrides SHOPFLEET_AMQP_URL.")
    public var amqpURL: String?
    @Option(name: .customLong("amqp-management-url"), help: "Overrides SHOPFLEET_AMQP_MANAGEMENT_URL.")
    public var amqpManagementURL: String?
    @Option(name: .customLong("database-url"), help: "Overrides SHOPFLEET_DATABASE_URL.")
    public var databaseURL: String?
    @Option(name: .customLong("redis-url"), help: "Overrides SHOPFLEET_REDIS_URL.")
    public var redisURL: String?

    public func configuration() throws -> ShopfleetConfiguration {
        try ShopfleetConfiguration.current(overrides: [
            ShopfleetConfiguration.amqpURL.name: amqpURL,
            ShopfleetConfiguration.amqpManagementURL.name: amqpManagementURL,
            ShopfleetConfiguration.databaseURL.name: databaseURL,
            ShopfleetConfiguration.redisURL.name: redisURL,
        ])
    }
}

extension StringProtocol {
    /// Without surrounding white space (and, with `quotes`, double quotes).
    public func trimmed(quotes: Bool = false) -> String {
        let drop: (Character) -> Bool = { $0.isWhitespace || (quotes && $0 == "\"") }
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}
