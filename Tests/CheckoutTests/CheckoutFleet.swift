import AMQPClient
import AsyncHTTPClient
import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import Payments
import PaymentsSandbox
import PostgresClient
import Sagas
import Auth
import Identity
import ShopfleetTesting
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The whole fleet as real processes — every `shopfleet worker`, the edge, `shopfleet
/// payments-sandbox` and an SMTP sink, from the fleet plan every fleet is started from — against a
/// vhost and a database of their own. The supervisor restarts whatever dies.
final class CheckoutFleet: Sendable {
    let sandbox: BrokerSandbox
    let scratch: ScratchDatabase
    var databaseName: String { scratch.name }
    var databaseURL: String { scratch.url }
    let database: PostgresClient
    let amqp: AMQPConnection
    let channel: AMQPChannel
    let supervisor: FleetSupervisor
    /// Each process's port, by name (one replica per role, so a role's name).
    let ports: [String: Int]
    /// The operator's settings (the admin URLs, every key): what `shopfleet saga`, `dlq` and the
    /// like run with beside the fleet. The fleet's processes each get only their own share.
    let environment: [String: String]
    let logDirectory: String

    /// Identity's signing key in every test fleet of this process (tests sign tokens with it too);
    /// the edge gets only its public key.
    static let signingKey = AccessTokens.generateSigningKey(kid: "test1")
    static let publicKeys = try! AccessTokens.publicKey(of: signingKey)
    /// Identity's tokens (signing), as the fleet's identity worker makes them.
    static func signer() async throws -> AccessTokens { try await AccessTokens(signingKey: signingKey) }
    /// The edge's tokens (verifying only).
    static func verifier() async throws -> AccessTokens { try await AccessTokens(publicKeys: publicKeys) }
    /// The operator's fleet secret of the test servers: every service's broker and database password derives from it.
    static var fleetSecret: String { (try? TestServers.environment("SHOPFLEET_FLEET_SECRET")) ?? "" }

    static var binary: String {
        let exe = ChildProcess.currentExecutable ?? ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/shopfleet"
    }

    /// The fleet's topology with retry tiers of 200 and 400 ms, for tests that wait for a dead letter.
    static let shortRetriesTopologyFile: String = {
        let path = "/tmp/shopfleet-short-retries-\(getpid()).yaml"
        let text = try! String(contentsOfFile: BrokerSandbox.fleetTopologyFile, encoding: .utf8)
        precondition(text.contains("tiers: [1s, 5s, 30s, 2m]"), "topology/shopfleet.yaml changed its retry tiers; update the test")
        let short = text.replacing("tiers: [1s, 5s, 30s, 2m]", with: "tiers: [200ms, 400ms]")
        precondition(FileManager.default.createFile(atPath: path, contents: Data(short.utf8)), "cannot write \(path)")
        return path
    }()

    private init(environment extra: [String: String], topologyFile: String, mail: FleetPlan.Mail?) async throws {
        sandbox = try await BrokerSandbox.create(topologyFile: topologyFile)
        scratch = try await ScratchDatabase.create("checkout")
        // Each service as its own broker user and database role, as `make run` and production run them.
        try await FleetIdentities(secret: Self.fleetSecret).provision(topology: sandbox.topology, vhost: sandbox.vhost,
                                                                      management: sandbox.management, databaseURL: scratch.url)
        database = PostgresClient(configuration: try PostgresConfiguration(url: scratch.url), maximumConnections: 4)
        amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "checkout test"))
        channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        logDirectory = "/tmp/\(scratch.name)"
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
        var environment = [
            "SHOPFLEET_AMQP_URL": sandbox.amqpURL,
            "SHOPFLEET_DATABASE_URL": scratch.url,
            "SHOPFLEET_TOPOLOGY_FILE": topologyFile,
            "SHOPFLEET_PAYMENTS_API_KEY": "sk_test_" + TestServers.uniqueName("fleet"),
            "SHOPFLEET_WORKER_CONCURRENCY": "4",
            "SHOPFLEET_JWT_SIGNING_KEY": Self.signingKey,
            "SHOPFLEET_JWT_PUBLIC_KEYS": Self.publicKeys,
            "SHOPFLEET_FLEET_SECRET": Self.fleetSecret,
            "SHOPFLEET_REDIS_URL": try TestServers.redisURL(),
            "SHOPFLEET_OPENAPI_FILE": TestServers.repositoryRoot + "/openapi.yaml",
            "SHOPFLEET_LOG_LEVEL": "info",
        ]
        environment.merge(extra) { _, new in new }
        self.environment = environment
        // One block of consecutive free ports, so no two processes can draw the same one.
        let first = TestServers.freePort(count: FleetPlan.Ports.blockSize(workers: FleetPlan.workerRoles.count, edges: 1))
        let plan = FleetPlan.shop(binary: Self.binary, python: try TestServers.environment("SHOPFLEET_PYTHON"), environment: environment,
                                  ports: .block(from: first, edges: 1), mail: mail ?? .maildir(logDirectory + "/maildir"))
        supervisor = FleetSupervisor(plan: plan, output: .files(directory: logDirectory))
        ports = Dictionary(uniqueKeysWithValues: plan.processes.map { ($0.name, $0.port) })
    }

    /// Runs `body` with a fleet started with `environment` added; stops it and drops its database
    /// and vhost afterwards, printing the processes' logs if `body` failed. `mail` replaces the
    /// fleet's Maildir sink (`FleetPlan.Mail.none`, spelled out: a bare `.none` is nil here, the
    /// Maildir; the fleet then mails `SHOPFLEET_SMTP_URL` of `environment`).
    static func with(environment: [String: String] = [:], topologyFile: String = BrokerSandbox.fleetTopologyFile,
                     mail: FleetPlan.Mail? = nil, _ body: (CheckoutFleet) async throws -> Void) async throws {
        let fleet = try await CheckoutFleet(environment: environment, topologyFile: topologyFile, mail: mail)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await fleet.supervisor.run() }
                try await fleet.supervisor.waitUntilReady(deadline: .seconds(60))
                try await body(fleet)
                await fleet.supervisor.stopAll()
                try await group.waitForAll()
            }
        } catch {
            fleet.printLogs()
            await fleet.shutdown()
            throw error
        }
        await fleet.shutdown()
    }

    /// Where the SMTP sink keeps what it received (a Maildir).
    var maildir: String { "\(logDirectory)/maildir" }

    func waitReady(_ role: String) async throws {
        try await supervisor.waitUntilReady([role], deadline: .seconds(60))
    }

    /// SIGKILLs a process and waits for it to be gone; the supervisor starts it again.
    func kill(_ role: String) async throws {
        try await supervisor.kill(role)
    }

    func shutdown() async {
        await supervisor.stopAll()
        await amqp.close()
        await database.close()
        await scratch.drop()
        await sandbox.remove()
    }

    /// Every secret the fleet's processes hold: the values of the secret settings, the passwords
    /// in the server URLs each process was given, and the operator's fleet secret.
    var secrets: [(name: String, value: String)] {
        var found: [(name: String, value: String)] = [("SHOPFLEET_FLEET_SECRET", Self.fleetSecret)]
        for process in supervisor.plan.processes {
            for (key, value) in supervisor.plan.environment(of: process)
            where FleetPlan.holders[key] != nil && key != "SHOPFLEET_JWT_PUBLIC_KEYS" {
                if key.hasSuffix("_URL") {
                    // scheme://user:password@host…
                    guard let start = value.firstRange(of: "://")?.upperBound,
                          let at = value[start...].firstIndex(of: "@"),
                          let colon = value[start..<at].firstIndex(of: ":") else { continue }
                    found.append(("the password in \(process.name)'s \(key)", String(value[value.index(after: colon)..<at])))
                } else {
                    found.append(("\(process.name)'s \(key)", value))
                }
            }
        }
        return found.filter { !$0.value.isEmpty }
    }

    /// Which of the fleet's secrets (and of `also`) appear in a process's log: a line of 16 or
    /// more characters of a secret is enough (a PEM key is not logged whole to leak).
    func secretsInLogs(also: [(name: String, value: String)] = []) throws -> (leaks: [String], scannedBytes: Int, secrets: Int) {
        let secrets = self.secrets + also
        var leaks: [String] = []
        var scanned = 0
        for process in supervisor.plan.processes {
            let log = (try? String(contentsOfFile: "\(logDirectory)/\(process.name).log", encoding: .utf8)) ?? ""
            scanned += log.utf8.count
            for secret in secrets {
                let pieces = secret.value.split(separator: "\n").map(String.init)
                    .filter { $0.count >= 16 || $0 == secret.value }
                if pieces.contains(where: { log.contains($0) }) { leaks.append("\(secret.name) in \(process.name).log") }
            }
        }
        return (leaks, scanned, secrets.count)
    }

    /// Opens a transaction on a connection of its own and runs `statements` in it: their locks
    /// are held until ``HeldLocks/release()``, whatever else the test does meanwhile.
    func holdLocks(_ statements: [String]) async throws -> HeldLocks {
        let connection = try await PostgresConnection.connect(try PostgresConfiguration(url: databaseURL))
        try await connection.query("BEGIN")
        for statement in statements { try await connection.query(statement) }
        return HeldLocks(connection: connection)
    }

    /// Runs `publish` with `role`'s process stopped (SIGSTOP), then lets it go on (SIGCONT) once
    /// `queue` has nothing left to hand out: what `publish` sent waits in the consumers' prefetch
    /// and reaches each consumer as one batch, all at the same moment.
    /// (A role frozen already, by ``freeze(_:)``, stays frozen until then.)
    func whileFrozen(_ role: String, queue: String, _ publish: () async throws -> Void) async throws {
        freeze(role)
        defer { supervisor.signal(role, SIGCONT) }
        try await publish()
        try await waitUntil(deadline: .seconds(30)) { [self] in
            (try? await channel.declareQueue(queue, passive: true).messageCount) == 0
        }
    }

    /// Stops `role`'s process (SIGSTOP); a ``whileFrozen(_:queue:_:)`` of it lets it go on.
    func freeze(_ role: String) { supervisor.signal(role, SIGSTOP) }

    /// Until a statement of `role`'s database role is waiting for a lock.
    func waitUntilBlocked(_ role: String, deadline: Duration = .seconds(30)) async throws {
        try await waitUntil(deadline: deadline) {
            (try? await count("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'",
                              [FleetIdentities.databaseRole(role)])) ?? 0 >= 1
        }
    }

    func printLogs() {
        for process in supervisor.plan.processes {
            let text = (try? String(contentsOfFile: "\(logDirectory)/\(process.name).log", encoding: .utf8)) ?? ""
            print("==== \(process.name) (last lines)\n" + text.split(separator: "\n").suffix(40).joined(separator: "\n"))
        }
    }

    // MARK: - Talking to the fleet

    @discardableResult
    func send<C: Command>(_ command: C, times: Int = 1) async throws -> Envelope {
        let envelope = try Envelope(command)
        for _ in 0..<times {
            try await channel.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
        }
        return envelope
    }

    struct Item {
        var product: Product
        var stock: Int
    }

    /// Products in the catalog and their stock, once both workers have them.
    func seed(_ items: [Item]) async throws {
        for item in items {
            try await send(UpsertProduct(product: item.product))
            try await send(AdjustStock(sku: item.product.sku, delta: item.stock, reason: "test stock"))
        }
        try await waitUntil(deadline: .seconds(20)) { [self] in
            let products = try? await database.query("SELECT count(*) FROM catalog.products WHERE id = ANY($1)", [items.map(\.product.id)])
            let stock = try? await database.query("SELECT count(*) FROM inventory.stock WHERE sku = ANY($1)", [items.map(\.product.sku)])
            return (try? products?[0].decode(Int.self, 0)) == items.count && (try? stock?[0].decode(Int.self, 0)) == items.count
        }
    }

    static func product(_ sku: String, price: Int) -> Product {
        Product(id: "prod-\(sku.lowercased())", sku: sku, name: "Product \(sku)", description: "for tests", category: "test",
                price: Money(amount: price, currency: "EUR"))
    }

    func placeOrder(_ lines: [(Product, Int)], paymentMethod: String = "pm_card_visa", times: Int = 1,
                    email: String = "ada@example.com") async throws -> String {
        let id = UUIDv7.generate()
        try await send(PlaceOrder(orderID: id, customerID: "cus-test", customerEmail: email,
                                  lines: lines.map { OrderLineRequest(productID: $0.0.id, quantity: $0.1) }, paymentMethod: paymentMethod,
                                  shippingAddress: Address(name: "Ada", line1: "1 Test Street", postalCode: "1000", city: "Brussels", country: "BE")),
                       times: times)
        return id
    }

    struct OrderState: Equatable {
        var status: String
        var reason: String?
        var sagaState: String?
    }

    func order(_ id: String) async throws -> OrderState? {
        let rows = try await database.query("""
            SELECT o.status, o.status_reason, s.state FROM orders.orders o LEFT JOIN orders.sagas s ON s.id = o.id WHERE o.id = $1
            """, [id])
        guard rows.count == 1 else { return nil }
        return OrderState(status: try rows[0].decode(String.self, 0), reason: try rows[0].decode(String?.self, 1),
                          sagaState: try rows[0].decode(String?.self, 2))
    }

    /// Waits until the order's saga is in one of `states`.
    @discardableResult
    func waitForSaga(_ id: String, in states: Set<String>, deadline: Duration = .seconds(30)) async throws -> OrderState {
        let last = Mutex<OrderState?>(nil)
        do {
            try await waitUntil(deadline: deadline) { [self] in
                let state = try? await order(id)
                last.withLock { $0 = state }
                return state?.sagaState.map(states.contains) ?? false
            }
        } catch {
            throw TestFailure("saga \(id) did not reach \(states.sorted()) within \(deadline); last seen: \(String(describing: last.withLock { $0 }))")
        }
        return try await order(id)!
    }

    func stock(_ sku: String) async throws -> (onHand: Int, reserved: Int) {
        let rows = try await database.query("SELECT on_hand, reserved FROM inventory.stock WHERE sku = $1", [sku])
        return (try rows[0].decode(Int.self, 0), try rows[0].decode(Int.self, 1))
    }

    /// `shopfleet admin grant`: the operator makes a registered customer an admin.
    func grantAdmin(_ email: String) async throws {
        let said = try await ChildProcess.check([Self.binary, "admin", "grant", email, "--by", "test operator", "--reason", "a test needs an admin"],
                                                extraEnvironment: environment)
        guard said.contains("customer → admin") else { throw TestFailure("admin grant said: \(said)") }
    }

    func count(_ sql: String, _ binds: [any PostgresEncodable] = []) async throws -> Int {
        try await database.query(sql, binds)[0].decode(Int.self, 0)
    }

    func steps(_ id: String) async throws -> [SagaStep] {
        try await SagaReader(schema: "orders").steps(of: id, on: database)
    }

    // MARK: - Mail

    struct Mail {
        var headers: [String: String]
        var body: String
    }

    /// What the SMTP sink received, oldest first.
    func mails() throws -> [Mail] {
        let directory = maildir + "/new"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        return try names.map { name in
            let text = try String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8).replacing("\r\n", with: "\n")
            let parts = text.split(separator: "\n\n", maxSplits: 1, omittingEmptySubsequences: false)
            var headers: [String: String] = [:]
            for line in parts[0].split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[String(line[..<colon]).lowercased()] = String(line[line.index(after: colon)...]).trimmingPrefix(" ").description
            }
            return Mail(headers: headers, body: parts.count > 1 ? String(parts[1]) : "")
        }
    }

    static func accepts(port: Int) -> Bool { LocalPort.accepts(port) }

    // MARK: - The gateway

    /// The gateway's secret key (the payments worker's and the sandbox's).
    var paymentsKey: String { supervisor.plan.process("payments-sandbox").flatMap { supervisor.plan.environment(of: $0)["SHOPFLEET_PAYMENTS_API_KEY"] } ?? "" }

    func sandboxStats() async throws -> PaymentsSandbox.Stats {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(ports["payments-sandbox"]!)/_sandbox/stats")
        request.headers.add(name: "Authorization", value: "Bearer \(paymentsKey)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        guard response.status == .ok else { throw TestFailure("the sandbox's stats answered \(response.status)") }
        let body = try await response.body.collect(upTo: 1 << 20)
        return try StripeJSON.decoder().decode(PaymentsSandbox.Stats.self, from: Data(body.readableBytesView))
    }

    func setFaults(_ faults: PaymentsSandbox.Faults) async throws {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(ports["payments-sandbox"]!)/_sandbox/faults")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(paymentsKey)")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(faults)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        guard response.status == .ok else { throw TestFailure("setting faults answered \(response.status)") }
    }

    /// A counter of a worker's `/metrics`, summed over the label sets containing `labels`.
    func metric(_ role: String, _ name: String, containing labels: String = "") async throws -> Double {
        let text = String(buffer: try await get(role, "/metrics").body)
        return text.split(separator: "\n").filter { $0.hasPrefix(name) && $0.contains(labels) }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }

    func get(_ role: String, _ path: String) async throws -> (status: Int, body: ByteBuffer) {
        // /healthz, /readyz and /metrics on the process's ops port (the edge's is apart from its public one).
        let ops = ["/healthz", "/readyz", "/metrics"].contains(path)
        let port = ops ? supervisor.plan.process(role)?.opsPort ?? ports[role]! : ports[role]!
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(5))
        return (Int(response.status.code), try await response.body.collect(upTo: 1 << 20))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Locks a test holds in an open transaction (``CheckoutFleet/holdLocks(_:)``).
struct HeldLocks: Sendable {
    let connection: PostgresConnection
    func release() async throws {
        try await connection.query("ROLLBACK")
        await connection.close()
    }
}
