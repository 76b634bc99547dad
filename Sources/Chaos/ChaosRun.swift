import AMQPClient
import Auth
import ClientRuntime
import Contracts
public import Fleet
import FoundationEssentials
import Logging
import Messaging
import PostgresClient
import RabbitManagement
import ServiceLifecycle
import Synchronization

/// One chaos run: a fleet of its own (a vhost and a database on the given servers, every process
/// from the fleet plan), customers shopping through the edge while the fault schedule hits it,
/// then, once everything is quiet, the ledger read from every store and checked.
public struct ChaosRun: Sendable {
    /// The servers the fleet runs on, and how to stop and start them (`scripts/servers.sh`).
    /// Consumers per queue in every worker of a chaos fleet.
    static let concurrency = 8

    public struct Servers: Sendable {
        public var amqpURL: String
        public var managementURL: String
        public var databaseURL: String
        public var redisURL: String
        /// `scripts/servers.sh` and the instance (`dev`, `test`, `chaos`): needed for server faults.
        public var script: String?
        public var instance: String?
        /// The operator's fleet secret: each service runs as its own broker user and database role.
        public var fleetSecret: String

        public init(amqpURL: String, managementURL: String, databaseURL: String, redisURL: String, script: String?, instance: String?,
                    fleetSecret: String) {
            self.fleetSecret = fleetSecret
            self.amqpURL = amqpURL
            self.managementURL = managementURL
            self.databaseURL = databaseURL
            self.redisURL = redisURL
            self.script = script
            self.instance = instance
        }
    }

    public var scenario: ChaosScenario
    public var servers: Servers
    /// The `shopfleet` executable the fleet's processes run.
    public var binary: String
    /// The Python with `aiosmtpd` (the mail sink).
    public var python: String
    public var topologyFile: String
    public var openAPIFile: String
    /// Where the run keeps its logs and mail (`<directory>/<vhost>/`).
    public var directory: String
    /// How long to wait, once the faults are over, for every order to end and every queue to drain.
    public var quietDeadline: Duration
    /// Keep the vhost and the database afterwards, to look at them.
    public var keep: Bool
    public var say: @Sendable (String) -> Void

    public init(scenario: ChaosScenario, servers: Servers, binary: String, python: String, topologyFile: String, openAPIFile: String,
                directory: String, quietDeadline: Duration = .seconds(240), keep: Bool = false, say: @escaping @Sendable (String) -> Void) {
        self.scenario = scenario
        self.servers = servers
        self.binary = binary
        self.python = python
        self.topologyFile = topologyFile
        self.openAPIFile = openAPIFile
        self.directory = directory
        self.quietDeadline = quietDeadline
        self.keep = keep
        self.say = say
    }

    /// The fault schedule this run will use, for a fleet of `plan` (what `--dry-run` prints).
    public static func schedule(_ scenario: ChaosScenario, plan: FleetPlan) -> [ScheduledFault] {
        let killable = plan.processes.filter { $0.kind == .worker || $0.kind == .edge }.map(\.name)
        let freezable = plan.processes.filter { $0.kind == .worker }.map(\.name)
        return FaultSchedule.make(scenario, killable: killable, freezable: freezable)
    }

    /// Runs the scenario; the report says whether the ledger held. Throws only when the run
    /// itself could not be made (the servers are not there, the fleet never got ready).
    public func run() async throws -> ChaosReport {
        let topology = try Topology(contentsOfFile: topologyFile)
        let sandbox = try await FleetSandbox.create(prefix: "chaos", amqpURL: servers.amqpURL, managementURL: servers.managementURL,
                                                    databaseURL: servers.databaseURL, topology: topology,
                                                    identities: try FleetIdentities(secret: servers.fleetSecret))
        let folder = "\(directory)/\(sandbox.vhost)"
        try FileManager.default.createDirectory(atPath: "\(folder)/logs", withIntermediateDirectories: true)
        say("run folder: \(folder) (process logs in logs/, mail in mail/new)")
        do {
            let report = try await run(in: sandbox, folder: folder, topology: topology)
            if !keep { await sandbox.remove() }
            return report
        } catch {
            if !keep { await sandbox.remove() }
            throw error
        }
    }

    private func run(in sandbox: FleetSandbox, folder: String, topology: Topology) async throws -> ChaosReport {
        let replicas = try FleetPlan.replicas(parsing: scenario.replicas)
        let edges = max(1, replicas["edge"] ?? 1)
        let first = LocalPort.free(count: FleetPlan.Ports.blockSize(workers: FleetPlan.workerRoles.reduce(0) { $0 + max(1, replicas[$1] ?? 1) },
                                                                    edges: edges) + 1)
        let ports = FleetPlan.Ports.block(from: first + 1, edges: edges)
        let sink = WebhookSink(port: first)
        let secret = { (0..<4).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16) }.joined() }
        let signingKey = AccessTokens.generateSigningKey(kid: "chaos")
        let environment = [
            // A frozen process loses its connection after about two heartbeats.
            "SHOPFLEET_AMQP_URL": Self.withQuery(sandbox.amqpURL, "heartbeat=\(scenario.heartbeatSeconds)"),
            "SHOPFLEET_DATABASE_URL": sandbox.databaseURL,
            "SHOPFLEET_REDIS_URL": servers.redisURL,
            "SHOPFLEET_TOPOLOGY_FILE": topologyFile,
            "SHOPFLEET_OPENAPI_FILE": openAPIFile,
            "SHOPFLEET_PAYMENTS_API_KEY": "sk_test_" + secret(),
            "SHOPFLEET_JWT_SIGNING_KEY": signingKey,
            "SHOPFLEET_JWT_PUBLIC_KEYS": try AccessTokens.publicKey(of: signingKey),
            "SHOPFLEET_FLEET_SECRET": servers.fleetSecret,
            "SHOPFLEET_WEBHOOK_URL": "http://127.0.0.1:\(sink.port)/",
            "SHOPFLEET_WEBHOOK_SECRET": secret(),
            // Every customer comes from 127.0.0.1: a limit per client would throttle the whole run.
            "SHOPFLEET_EDGE_RATE_LIMIT": "1000000", "SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR": "1000000",
            "SHOPFLEET_LOG_LEVEL": "info",
            "SHOPFLEET_WORKER_CONCURRENCY": String(Self.concurrency),
        ]
        let plan = FleetPlan.shop(binary: binary, python: python, environment: environment, ports: ports, replicas: replicas,
                                  mail: .maildir("\(folder)/mail"))
        let schedule = Self.schedule(scenario, plan: plan)
        say("fleet: \(plan.processes.count) processes (\(plan.processes.map(\.name).joined(separator: " ")))")
        say("schedule (seed \(scenario.seed)): \(schedule.count) faults; " + schedule.filter { if case .kill = $0.fault { return false }; return true }
            .map { "t=\(Fault.format($0.at))s \($0.fault.summary)" }.joined(separator: "; "))
        let supervisor = FleetSupervisor(plan: plan, output: .files(directory: "\(folder)/logs"))
        var logger = Logger(label: "shopfleet.chaos")
        logger.logLevel = .warning
        let services = ServiceGroup(services: [sink.application()], gracefulShutdownSignals: [], logger: logger)

        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            group.addTask { try await supervisor.run() }
            let outcome: Result<ChaosReport, any Error>
            do {
                outcome = .success(try await shop(plan: plan, schedule: schedule, supervisor: supervisor, sandbox: sandbox, sink: sink, folder: folder,
                                                  notificationQueues: topology.queues(of: "notifications").count))
            } catch {
                outcome = .failure(error)
            }
            // Stop the fleet and the webhook receiver, and wait for both.
            await supervisor.stopAll()
            await services.triggerGracefulShutdown()
            try? await group.waitForAll()
            return try outcome.get()
        }
    }

    private func shop(plan: FleetPlan, schedule: [ScheduledFault], supervisor: FleetSupervisor, sandbox: FleetSandbox, sink: WebhookSink,
                      folder: String, notificationQueues: Int) async throws -> ChaosReport {
        try await supervisor.waitUntilReady(deadline: .seconds(180))
        let mix = ShopperMix(seed: scenario.seed)
        let database = PostgresClient(configuration: try PostgresConfiguration(url: sandbox.databaseURL), maximumConnections: 2)
        do {
            let report = try await shop(plan: plan, schedule: schedule, supervisor: supervisor, sandbox: sandbox, sink: sink, folder: folder,
                                        mix: mix, database: database, notificationQueues: notificationQueues)
            await database.close()
            return report
        } catch {
            await database.close()
            throw error
        }
    }

    private func shop(plan: FleetPlan, schedule: [ScheduledFault], supervisor: FleetSupervisor, sandbox: FleetSandbox, sink: WebhookSink,
                      folder: String, mix: ShopperMix, database: PostgresClient, notificationQueues: Int) async throws -> ChaosReport {
        let injected = try await seed(mix, sandbox: sandbox, database: database)
        say("catalog seeded: \(mix.products.count) products; shopping starts")

        let sandboxPort = plan.replicas(of: "payments-sandbox").first?.port ?? 0
        let sandboxKey = plan.replicas(of: "payments-sandbox").first.flatMap { plan.environment(of: $0)["SHOPFLEET_PAYMENTS_API_KEY"] } ?? ""
        let driver = ShopDriver(edges: plan.replicas(of: "edge").map(\.port), mix: mix, seed: scenario.seed, runID: sandbox.databaseName,
                                orders: scenario.orders, spreadOver: scenario.faultsFor, say: say)
        let serverControl = servers.script.flatMap { script in servers.instance.map { FaultInjector.Servers(script: script, instance: $0) } }
        let injector = FaultInjector(supervisor: supervisor, servers: serverControl, sandboxPort: sandboxPort, sandboxKey: sandboxKey, started: driver.started, say: say)
        let reader = StoreReader(database: database, management: sandbox.management, vhost: sandbox.vhost, sandboxPort: sandboxPort, sandboxKey: sandboxKey,
                                 maildir: "\(folder)/mail")
        let scenario = self.scenario
        await withTaskGroup(of: Void.self) { progress in
            progress.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(5))
                    if !Task.isCancelled { self.say("t=\(Int(seconds(since: driver.started)))s \(driver.accepted) orders accepted of \(scenario.orders)") }
                }
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await driver.shop(customers: scenario.customers) }
                group.addTask { await injector.run(schedule) }
            }
            progress.cancelAll()
        }
        let faultsOver = injector.happened.map(\.until).max() ?? 0
        let results = driver.results
        let accepted = results.compactMap(\.orderID)
        say("customers done, faults over at t=\(Fault.format(faultsOver))s; waiting for every order to end and every queue to drain")

        // Quiet: every accepted order terminal, no saga open, every outbox row published, every
        // queue empty, twice in a row (the management API's counts are a few seconds old).
        var quietAt: Double?
        var calm = 0
        let deadline = ContinuousClock.now + quietDeadline
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            if let unsettled = try? await reader.unsettled(accepted), unsettled == (0, 0, 0),
               let queues = try? await reader.queues(), queues.values.allSatisfy({ $0 == 0 }) {
                calm += 1
                if calm == 2 {
                    quietAt = seconds(since: driver.started)
                    break
                }
                try? await Task.sleep(for: .seconds(5))
                continue
            }
            calm = 0
            try? await Task.sleep(for: .seconds(1))
        }
        if quietAt == nil { say("not quiet after \(quietDeadline): checking the ledger as it is") }

        let snapshot = try await reader.snapshot(webhooks: sink.deliveries)
        var acceptedOrders: [String: ShopperMix.Order] = [:]
        for outcome in results { if let id = outcome.orderID { acceptedOrders[id] = outcome.order } }
        let expectations = LedgerExpectations(
            accepted: acceptedOrders, refused: results.filter { $0.orderID == nil }.map { ($0.order, $0.lastAnswer) },
            initialStock: Dictionary(uniqueKeysWithValues: mix.products.map { ($0.sku, $0.stock) }), injectedLetters: injected,
            planned: scenario.orders, copiesExplained: injector.happened.reduce(0) { total, fault in
                // Every consumer of each notifications queue may have been between its send and its commit.
                total + fault.notificationCopies(inFlight: Self.concurrency * notificationQueues, replicas: plan.replicas(of: "notifications").count)
            })
        let (checks, violations) = Ledger.check(snapshot, expectations)

        let mine = snapshot.orders.filter { acceptedOrders[$0.key] != nil }.values
        let finished = mine.filter { $0.status == "completed" || $0.status == "cancelled" }.map { $0.updatedAt.timeIntervalSince(driver.startedAt) }
        let lastTerminal = finished.max() ?? 0
        // The orders accepted before the faults were over: when the last of them ended.
        let acceptedAt = Dictionary(results.compactMap { outcome in outcome.orderID.map { ($0, outcome.acceptedAt ?? 0) } }, uniquingKeysWith: min)
        let lived = mine.filter { (acceptedAt[$0.id] ?? .infinity) <= faultsOver }.map { $0.updatedAt.timeIntervalSince(driver.startedAt) }
        var cancelled: [String: Int] = [:]
        for order in mine where order.status == "cancelled" { cancelled[ChaosReport.kind(ofReason: order.reason), default: 0] += 1 }
        let counters = driver.counts
        return ChaosReport(
            scenario: scenario, startedAt: driver.startedAt,
            orders: .init(tried: results.count, accepted: accepted.count, completed: mine.filter { $0.status == "completed" }.count,
                          cancelled: cancelled, refused: results.count - accepted.count),
            faults: injector.happened.map { .init(at: $0.at, down: $0.down, until: $0.until, kind: $0.kind, summary: $0.summary, error: $0.error) },
            restarts: supervisor.events.filter { if case .restarting = $0.kind { return true }; return false }.count,
            timeline: .init(accepted: results.compactMap(\.acceptedAt).sorted(), finished: finished.sorted()),
            requests: counters.requests, retriedRequests: counters.retries, serverErrors: counters.serverErrors,
            tooManyRequests: counters.tooManyRequests,
            timeouts: counters.timeouts, connectionFailures: counters.connectionFailures, cartsRefilled: counters.cartsRefilled,
            checks: checks, violations: violations,
            redeliveredEmails: Ledger.redeliveredCopies(snapshot.mails), redeliveredWebhooks: Ledger.redeliveredCopies(sink.deliveries),
            lastFaultOver: faultsOver, lastOrderTerminal: lastTerminal, recovery: max(0, lastTerminal - faultsOver),
            settled: max(0, (lived.max() ?? 0) - faultsOver),
            quietAfter: max(0, (quietAt ?? seconds(since: driver.started)) - faultsOver), seconds: seconds(since: driver.started))
    }

    /// The shop's products with their stock (sent as commands, as an operator's tool would), and
    /// one message the fleet cannot read, dead-lettered on purpose: the ledger expects exactly
    /// that letter. Returns the injected letters (message id → error type).
    private func seed(_ mix: ShopperMix, sandbox: FleetSandbox, database: PostgresClient) async throws -> [String: String] {
        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "shopfleet chaos"))
        do {
            let injected = try await seed(mix, on: amqp, database: database)
            await amqp.close()
            return injected
        } catch {
            await amqp.close()
            throw error
        }
    }

    private func seed(_ mix: ShopperMix, on amqp: AMQPConnection, database: PostgresClient) async throws -> [String: String] {
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        func send<C: Command>(_ command: C) async throws {
            let envelope = try Envelope(command)
            try await channel.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
        }
        for product in mix.products {
            try await send(UpsertProduct(product: Product(id: product.id, sku: product.sku, name: "Chaos \(product.sku.lowercased())",
                                                          description: "sold during a chaos run", category: "chaos",
                                                          price: Money(amount: product.price, currency: "EUR"))))
            try await send(AdjustStock(sku: product.sku, delta: product.stock, reason: "chaos run"))
        }
        let skus = mix.products.map(\.sku)
        try await waitUntil(deadline: .seconds(60), interval: .milliseconds(200)) {
            let rows = try? await database.query(
                "SELECT (SELECT count(*) FROM catalog.products WHERE sku = ANY($1)) + (SELECT count(*) FROM inventory.stock WHERE sku = ANY($1))", [skus])
            return (try? rows?[0].decode(Int.self, 0)) == skus.count * 2
        }
        var poison = Envelope(type: PlaceOrder.type, body: Array("{not json".utf8))
        poison.messageID = "chaos-poison-" + UUIDv7.generate()
        try await channel.publish(poison.body, routingKey: PlaceOrder.queue, properties: poison.properties, mandatory: true)
        return [poison.messageID: "undecodable"]
    }

    /// `url` with `item` added to its query.
    static func withQuery(_ url: String, _ item: String) -> String {
        url + (url.contains("?") ? "&" : "?") + item
    }
}
