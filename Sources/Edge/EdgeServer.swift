public import AMQPClient
public import Auth
import Contracts
import CoreMetrics
import FoundationEssentials
public import Hummingbird
import HTTPTypes
public import Logging
public import Messaging
import NIOCore
public import Prometheus
import RabbitManagement
public import RedisClient
import Synchronization

/// The HTTP edge: translates `/v1` requests into commands and queries on the broker, verifies
/// access tokens itself, and never opens the database.
public struct EdgeServer: Sendable {
    public struct Settings: Sendable {
        public var queryTimeout: Duration = .seconds(5)
        public var rateLimit: Double = 50
        public var rateBurst: Int = 100
        /// The proxies (the Ingress) whose `X-Forwarded-For` names the client.
        public var trustedProxies: [IPRange] = []
        public var registrationsPerHour: Int = 20
        /// Every Redis key the edge writes starts with this: `shopfleet:`, then the fleet's vhost
        /// unless it is `/`, so fleets sharing a Redis (tests, staging) keep their limits apart.
        public var redisPrefix = "shopfleet:"
        public var openAPIDocument: String
        /// The storefront at `/` and the console at `/console`; nil: no pages.
        public var web: WebAssets?
        /// The RabbitMQ management API for the console's fleet view (no credentials in it: the
        /// edge signs in as its own broker user); nil: no fleet view.
        public var managementURL: String?
        public init(openAPIDocument: String) { self.openAPIDocument = openAPIDocument }
    }

    let amqp: AMQPConnection
    let publisher: AMQPChannel
    let queries: QueryClient
    let redis: RedisClient
    let tokens: AccessTokens
    let passwords: PasswordHasher
    let settings: Settings
    let logger: Logger
    let products = ProductCache()
    let fleet: FleetMonitor?
    private let following: Task<Void, Never>

    public init(amqp: AMQPConnection, redis: RedisClient, tokens: AccessTokens, passwords: PasswordHasher, settings: Settings,
                logger: Logger) async throws {
        self.amqp = amqp
        publisher = try await amqp.openChannel()
        try await publisher.enableConfirms()
        queries = try await QueryClient(connection: amqp)
        self.redis = redis
        self.tokens = tokens
        self.passwords = passwords
        self.settings = settings
        self.logger = logger
        fleet = try settings.managementURL.map { url in
            FleetMonitor(management: try RabbitManagement(url: url, user: amqp.configuration.user, password: amqp.configuration.password,
                                                          timeout: .seconds(5)),
                         vhost: amqp.configuration.vhost)
        }
        let (products, configuration) = (self.products, amqp.configuration)
        following = Task { await products.follow(configuration, logger: logger) }
    }

    /// The public port: `/v1` and `/openapi.yaml`. `/healthz`, `/readyz` and `/metrics` are on the
    /// ops port (``ops(host:port:registry:)``), never reachable through the public one.
    public func application(host: String = "127.0.0.1", port: Int, registry: PrometheusCollectorRegistry) -> some ApplicationProtocol {
        let router = self.router(registry: registry)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let logger = self.logger
        return Application(router: router,
                           configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "shopfleet-edge"),
                           onServerRunning: { channel in
                               logger.info("edge listening", metadata: ["address": .string("\(channel.localAddress.map { "\($0)" } ?? "?")")])
                           },
                           logger: quiet)
    }

    /// Every route; `openapi.yaml` must describe each under `/v1` (a test compares them).
    public func router(registry: PrometheusCollectorRegistry) -> Router<EdgeContext> {
        let router = Router(context: EdgeContext.self)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: ClientAddress(trusted: settings.trustedProxies))

        // The pages and their assets: static, answered from memory before any limit or token
        // check, so that a CDN (or a browser) can fetch them while Redis or the broker is down.
        if let web = settings.web {
            let page: @Sendable (Request, EdgeContext) async throws -> Response = { request, _ in
                guard let response = web.response(path: request.uri.path, ifNoneMatch: request.headers[.ifNoneMatch]) else {
                    throw Problem.notFound("no page \(request.uri.path)")
                }
                return response
            }
            router.get("/", use: page)
            router.get("console", use: page)
            router.get("assets/**", use: page)
        }

        let document = settings.openAPIDocument
        let api = router.group()
            .add(middleware: Authenticator(tokens: tokens))
            .add(middleware: RateLimiter(redis: redis, rate: settings.rateLimit, burst: settings.rateBurst, prefix: settings.redisPrefix))
            .add(middleware: TokenGate())
        api.get("openapi.yaml") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: ByteBuffer(string: document)))
        }

        let v1 = api.group("v1")
        AuthRoutes(edge: self).add(to: v1.group("auth"))
        ProductRoutes(edge: self).add(to: v1.group("products"))
        CartRoutes(edge: self).add(to: v1.group("cart"))
        OrderRoutes(edge: self).add(to: v1.group("orders"))
        AdminRoutes(edge: self).add(to: v1.group("admin"))
        let operations = OperationsRoutes(edge: self)
        operations.add(sagas: v1.group("admin/sagas"))
        operations.add(deadLetters: v1.group("admin/dead-letters"))
        operations.add(fleet: v1.group("admin/fleet"))
        return router
    }

    /// The ops port: `/healthz`, `/readyz` (connected to RabbitMQ) and `/metrics`.
    public func ops(host: String = "127.0.0.1", port: Int, registry: PrometheusCollectorRegistry) -> OpsServer {
        let amqp = self.amqp
        return OpsServer(host: host, port: port, registry: registry, logger: logger) { amqp.isConnected ? nil : "not connected to RabbitMQ" }
    }

    // MARK: - Talking to the fleet

    /// Asks a query; the fleet's failures become problems that say which service and why.
    func ask<Q: Query>(_ query: Q) async throws -> Q.Reply {
        guard amqp.isConnected else { throw Problem.unavailable("the message broker is unreachable; try again shortly") }
        do {
            return try await queries.ask(query, timeout: settings.queryTimeout)
        } catch let failure as QueryClient.Failure {
            switch failure {
            case .timeout(_, let after): throw Problem.timeout("the \(Q.domain) service did not answer within \(after)")
            case .noSuchQueue: throw Problem.unavailable("the \(Q.domain) service is not set up (no queue takes its requests)")
            case .badReply(_, let message): throw Problem(.badGateway, "bad-reply", "A service answered what the edge cannot read", message)
            case .rejected(_, let kind, let message):
                switch kind {
                case "not-found": throw Problem.notFound(message)
                case "limit", "empty", "conflict", "duplicate": throw Problem.conflict(message)
                default: throw Problem.invalid(message)
                }
            case .failed(_, let message):
                throw Problem(.badGateway, "service-error", "The \(Q.domain) service could not do it", message)
            }
        } catch let error as AMQPError {
            throw Problem.unavailable("the message broker is unreachable (\(error.code)); try again shortly")
        }
    }

    /// Publishes a command and returns once the broker confirmed it. `messageID`, when given,
    /// makes a retry the same message (the domain's inbox then drops the copy).
    func send<C: Command>(_ command: C, sagaID: String? = nil, messageID: String? = nil) async throws {
        guard amqp.isConnected else { throw Problem.unavailable("the message broker is unreachable; nothing was sent") }
        if let validatable = command as? any Validatable {
            do { try validatable.validate() } catch { throw Problem.invalid("\(error)") }
        }
        var envelope = try Envelope(command, sagaID: sagaID)
        if let messageID { envelope.messageID = messageID }
        do {
            try await publisher.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
        } catch {
            throw Problem.unavailable("the message broker did not confirm the \(C.domain) command (\(error)); nothing is known to have been sent")
        }
    }

    /// Password work (bcrypt), bounded: when too much waits, 503 with `Retry-After` at once.
    func passwordWork<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let busy as PasswordHasher.Busy {
            FrontDoorMetrics.busyPasswords.increment()
            var problem = Problem.unavailable(busy.description)
            problem.headers[.retryAfter] = "1"
            throw problem
        }
    }

    /// Validates a request before it leaves, so its problems are the caller's 422, not a service error.
    func checked<T: Validatable>(_ value: T) throws -> T {
        do { try value.validate() } catch { throw Problem.invalid("\(error)") }
        return value
    }
}

/// Reads `Authorization: Bearer …` when present; routes that need a customer ask for it. A token
/// that does not verify is noted, and refused by ``TokenGate`` after the rate limit.
struct Authenticator: RouterMiddleware {
    typealias Context = EdgeContext
    let tokens: AccessTokens

    func handle(_ request: Request, context: EdgeContext, next: (Request, EdgeContext) async throws -> Response) async throws -> Response {
        var context = context
        if let header = request.headers[.authorization] {
            if header.hasPrefix("Bearer "), header.count > 7 {
                do {
                    context.claims = try await tokens.verify(String(header.dropFirst(7)))
                } catch let invalid as AccessTokens.Invalid {
                    context.tokenProblem = invalid.description
                }
            } else {
                context.tokenProblem = "the Authorization header must be 'Bearer <access token>'"
            }
        }
        return try await next(request, context)
    }
}

extension EdgeContext {
    func customer() throws -> AccessTokens.Claims {
        guard let claims else { throw Problem.unauthorized("this needs a signed-in customer: send 'Authorization: Bearer <access token>'") }
        return claims
    }

    func admin() throws -> AccessTokens.Claims {
        let claims = try customer()
        guard claims.role == "admin" else { throw Problem.forbidden("this needs the admin role") }
        return claims
    }
}

/// JSON answers.
func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    // With milliseconds: a dead letter's time sorts among the saga steps around it.
    encoder.dateEncodingStrategy = .custom { date, encoder in
        var container = encoder.singleValueContainer()
        try container.encode(date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
    }
    var headers = headers
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}
