import Auth
import AMQPClient
import ArgumentParser
import AsyncHTTPClient
import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import Logging
import Messaging
import NIOCore
import NIOHTTP1
import PostgresClient
import RabbitManagement
import Synchronization
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet bench checkout`: orders through the whole fleet (every worker a process, the
/// payments sandbox, an SMTP sink) on this machine, beside what the broker alone can do.
struct BenchCheckoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkout",
        abstract: "Orders per second and latency through the whole fleet, at a fixed offered rate and at saturation.",
        discussion: """
            Runs against the servers of SHOPFLEET_AMQP_URL / _MANAGEMENT_URL / _DATABASE_URL (make bench uses the
            test servers), in a vhost and a database of its own, with the fleet started from this binary.
            Latency is from PlaceOrder published to OrderConfirmed seen; its baseline is the same number of
            hops through the broker alone (publish with confirm, consume, ack) measured in the same run.
            """)

    @Option(help: "Offered rates of the fixed-rate phases, orders per second, comma-separated (latency against offered rate); 20 if not given.",
            transform: BenchCheckoutCommand.rates)
    var rate = [20]
    @Option(help: "Length of the fixed-rate phase, seconds.") var seconds = 15
    @Option(help: "Orders in the saturation phase, placed as fast as they can be published.") var orders = 600
    @Option(help: "Replicas of each worker: a number for all (2), or per role (2,orders=3).") var replicas: String?
    @Option(help: "Log level of the fleet's processes; their logs are kept in /tmp/shopfleet-<vhost>/ (info shows why a batch fell back); warning if not given.",
            transform: BenchCheckoutCommand.level)
    var logLevel = Logger.Level.warning
    @Flag(help: "Print JSON rows.") var json = false

    /// Refused by the parser, before anything starts: a mistyped level would otherwise stop every
    /// process of the bench's fleet at its start, each with its own error.
    static func level(_ text: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: text) else {
            throw ValidationError("a log level is one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return level
    }

    static func rates(_ text: String) throws -> [Int] {
        let rates = text.split(separator: ",").map { Int($0.filter { $0 != " " }) }
        guard !rates.isEmpty, rates.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("rates are positive whole numbers of orders per second, comma-separated (like 20,50,100)")
        }
        return rates.map { $0! }
    }

    func run() async throws {
        let config = try ShopfleetConfiguration.current()
        guard let python = ProcessInfo.processInfo.environment["SHOPFLEET_PYTHON"] else {
            throw ValidationError("SHOPFLEET_PYTHON is not set: eval \"$(scripts/servers.sh env test)\" first (it has the SMTP sink)")
        }
        let counts = try replicas.map(FleetPlan.replicas(parsing:)) ?? [:]
        let bench = try await CheckoutBench.start(config: config, python: python, replicas: counts, logLevel: logLevel.rawValue)
        do {
            let rows = try await bench.measure(rates: rate, seconds: seconds, orders: orders)
            await bench.stop()
            try BenchOutput.print(rows, json: json)
        } catch {
            bench.printLogs()
            await bench.stop()
            throw error
        }
    }
}

final class CheckoutBench: Sendable {
    let sandbox: FleetSandbox
    var vhost: String { sandbox.vhost }
    var management: RabbitManagement { sandbox.management }
    let database: PostgresClient
    let amqp: AMQPConnection
    let logDirectory: String
    let fleet: FleetSupervisor
    let products: [Product]
    /// When each order was placed, confirmed and completed (seconds on the continuous clock).
    let placed = Mutex<[String: ContinuousClock.Instant]>([:])
    let confirmed = Mutex<[String: ContinuousClock.Instant]>([:])
    let completed = Mutex<[String: ContinuousClock.Instant]>([:])
    let cancelled = Atomic<Int>(0)

    static let domains = ["catalog", "inventory", "orders", "payments", "notifications"]

    private init(sandbox: FleetSandbox, database: PostgresClient, amqp: AMQPConnection, logDirectory: String, fleet: FleetSupervisor,
                 products: [Product]) {
        self.sandbox = sandbox
        self.database = database
        self.amqp = amqp
        self.logDirectory = logDirectory
        self.fleet = fleet
        self.products = products
    }

    /// The whole fleet's extra roles for `bench edge`: identity, cart, search and the edge itself.
    static let edgeDomains = ["identity", "cart", "search"]

    static func start(config: ShopfleetConfiguration, python: String, edgePort: Int? = nil,
                      replicas: [String: Int] = [:], logLevel: String = "warning") async throws -> CheckoutBench {
        let topology = try Topology(contentsOfFile: config.value(ShopfleetConfiguration.topologyFile))
        // Each service as its own broker user and database role, as in production, when the operator has the fleet secret.
        let fleetSecret = config.value(ShopfleetConfiguration.fleetSecret)
        let identities = fleetSecret.isEmpty ? nil : try FleetIdentities(secret: fleetSecret)
        let sandbox = try await FleetSandbox.create(prefix: "bench-checkout", amqpURL: config.amqpURL, managementURL: config.amqpManagementURL,
                                                    databaseURL: config.databaseURL, topology: topology, identities: identities)
        let logDirectory = "/tmp/shopfleet-\(sandbox.vhost)"
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)

        let roles = domains + (edgePort == nil ? [] : edgeDomains)
        let workerProcesses = roles.reduce(0) { $0 + max(1, replicas[$1] ?? 1) }
        let port = LocalPort.free(count: FleetPlan.Ports.blockSize(workers: workerProcesses, edges: 1))
        var ports = FleetPlan.Ports.block(from: port, edges: 1)
        if let edgePort { ports.edge = edgePort }
        let binary = ChildProcess.currentExecutable ?? CommandLine.arguments[0]
        let signingKey = AccessTokens.generateSigningKey(kid: "bench")
        let environment = [
            "SHOPFLEET_AMQP_URL": sandbox.amqpURL, "SHOPFLEET_DATABASE_URL": sandbox.databaseURL,
            "SHOPFLEET_REDIS_URL": config.redisURL,
            "SHOPFLEET_TOPOLOGY_FILE": config.value(ShopfleetConfiguration.topologyFile),
            "SHOPFLEET_PAYMENTS_API_KEY": "sk_test_bench_\(sandbox.databaseName)", "SHOPFLEET_LOG_LEVEL": logLevel,
            "SHOPFLEET_JWT_SIGNING_KEY": signingKey, "SHOPFLEET_JWT_PUBLIC_KEYS": try AccessTokens.publicKey(of: signingKey),
            "SHOPFLEET_FLEET_SECRET": fleetSecret,
            "SHOPFLEET_EDGE_RATE_LIMIT": "1000000", "SHOPFLEET_EDGE_REGISTRATIONS_PER_HOUR": "1000000",
            "SHOPFLEET_OPENAPI_FILE": config.value(ShopfleetConfiguration.openAPIFile),
        ]
        let plan = FleetPlan.shop(binary: binary, python: python, environment: environment, ports: ports, replicas: replicas, workers: roles,
                                  edge: edgePort != nil, mail: .discard)
        let fleet = FleetSupervisor(plan: plan, output: .files(directory: logDirectory))
        try fleet.start()
        let database = PostgresClient(configuration: try PostgresConfiguration(url: sandbox.databaseURL), maximumConnections: 2)
        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "shopfleet bench checkout"))
        let products = (1...100).map { number in
            Product(id: "bench-\(number)", sku: "BENCH-\(number)", name: "Bench product \(number)", description: "for the benchmark",
                    category: "bench", price: Money(amount: 100 + number, currency: "EUR"))
        }
        let bench = CheckoutBench(sandbox: sandbox, database: database, amqp: amqp, logDirectory: logDirectory, fleet: fleet, products: products)
        try await fleet.waitUntilReady(deadline: .seconds(60))
        try await bench.seed()
        try await bench.observe()
        return bench
    }

    /// Products with plenty of stock, so that orders spread over many stock rows.
    private func seed() async throws {
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        for product in products {
            try await publish(UpsertProduct(product: product), on: channel)
            try await publish(AdjustStock(sku: product.sku, delta: 1_000_000, reason: "bench"), on: channel)
        }
        try await waitUntil(deadline: .seconds(60)) { [self] in
            let rows = try? await database.query("SELECT (SELECT count(*) FROM catalog.products) + (SELECT count(*) FROM inventory.stock)")
            return (try? rows?[0].decode(Int.self, 0)) == products.count * 2
        }
    }

    /// Watches the order events: a queue of our own bound to the orders topic.
    private func observe() async throws {
        let channel = try await amqp.openChannel()
        let queue = "bench-observer-\(UInt32.random(in: 0...UInt32.max))"
        _ = try await channel.declareQueue(queue, durable: false, exclusive: true, autoDelete: true)
        for event in [OrderConfirmed.type, OrderCompleted.type, OrderCancelled.type] {
            try await channel.bindQueue(queue, to: "orders.events", routingKey: event)
        }
        try await channel.setPrefetch(500)
        let consumer = try await channel.consume(queue: queue, noAck: true)
        Task {
            for try await delivery in consumer {
                let now = ContinuousClock.now
                switch delivery.properties.type {
                case OrderConfirmed.type?:
                    if let event = try? MessageCodec.decode(OrderConfirmed.self, from: delivery.body, typeName: OrderConfirmed.type) {
                        confirmed.withLock { $0[event.order.orderID] = now }
                    }
                case OrderCompleted.type?:
                    if let event = try? MessageCodec.decode(OrderCompleted.self, from: delivery.body, typeName: OrderCompleted.type) {
                        completed.withLock { $0[event.order.orderID] = now }
                    }
                default:
                    cancelled.add(1, ordering: .relaxed)
                }
            }
        }
    }

    private func publish<C: Command>(_ command: C, on channel: AMQPChannel) async throws {
        let envelope = try Envelope(command)
        try await channel.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
    }

    private func placeOrder(on channel: AMQPChannel) async throws -> String {
        let product = products.randomElement()!
        let order = PlaceOrder(orderID: UUIDv7.generate(), customerID: "bench", customerEmail: "bench@example.com",
                               lines: [OrderLineRequest(productID: product.id, quantity: 1)], paymentMethod: "pm_card_visa",
                               shippingAddress: Address(name: "Bench", line1: "1 Road", postalCode: "1000", city: "Brussels", country: "BE"))
        placed.withLock { $0[order.orderID] = .now }
        try await publish(order, on: channel)
        return order.orderID
    }

    private func waitCompleted(_ ids: [String], deadline: Duration) async throws {
        do {
            try await waitUntil(deadline: deadline) { [self] in
                completed.withLock { done in ids.allSatisfy { done[$0] != nil } }
            }
        } catch {
            let done = completed.withLock { done in ids.filter { done[$0] != nil }.count }
            throw ValidationError("only \(done) of \(ids.count) orders completed within \(deadline) (\(cancelled.load(ordering: .relaxed)) cancelled)")
        }
    }

    private func latencies(_ ids: [String], to events: borrowing Mutex<[String: ContinuousClock.Instant]>) -> [Double] {
        let sent = placed.withLock { $0 }
        let seen = events.withLock { $0 }
        return ids.compactMap { id in
            guard let start = sent[id], let end = seen[id] else { return nil }
            return Self.milliseconds(end - start)
        }.sorted()
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
    }

    /// What one phase measured: orders/s completed, latency to confirmed and to completed, and the
    /// CPU it cost (machine and per process group), with the orders it covered.
    struct Phase {
        var ids: [String]
        var rate: Double
        var confirmed: [Double]
        var completed: [Double]
        var cpu: (machine: Double, groups: [String: Double])

        /// Milliseconds of CPU per completed order.
        func cpuPerOrder(_ seconds: Double) -> Double { seconds * 1000 / Double(max(1, ids.count)) }
    }

    /// Places orders at `rate` per second for `seconds`, on an absolute schedule, and waits for all.
    func fixedRate(_ rate: Int, seconds: Int, on channel: AMQPChannel) async throws -> Phase {
        let cpuBefore = CPUSnapshot.take()
        var ids: [String] = []
        let start = ContinuousClock.now
        for index in 0..<(rate * seconds) {
            try await Task.sleep(until: start + .nanoseconds(Int64(index) * 1_000_000_000 / Int64(rate)))
            ids.append(try await placeOrder(on: channel))
        }
        try await waitCompleted(ids, deadline: .seconds(120 + seconds))
        return phase(ids, start: start, cpuBefore: cpuBefore)
    }

    /// `orders` placed as fast as they can be published, by 50 publishers, and waited for.
    func saturation(_ orders: Int, on channel: AMQPChannel) async throws -> Phase {
        let cpuBefore = CPUSnapshot.take()
        let start = ContinuousClock.now
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for publisher in 0..<50 {
                group.addTask {
                    var ids: [String] = []
                    for _ in stride(from: publisher, to: orders, by: 50) { ids.append(try await self.placeOrder(on: channel)) }
                    return ids
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        try await waitCompleted(ids, deadline: .seconds(max(300, orders / 10)))
        return phase(ids, start: start, cpuBefore: cpuBefore)
    }

    private func phase(_ ids: [String], start: ContinuousClock.Instant, cpuBefore: CPUSnapshot) -> Phase {
        let cpu = CPUSnapshot.take().since(cpuBefore)
        let end = completed.withLock { done in ids.compactMap { done[$0] }.max()! }
        return Phase(ids: ids, rate: Double(ids.count) / (Self.milliseconds(end - start) / 1000),
                     confirmed: latencies(ids, to: confirmed), completed: latencies(ids, to: completed), cpu: cpu)
    }

    func measure(rates: [Int], seconds: Int, orders: Int) async throws -> [BenchRow] {
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()

        // Warm up: connections, caches, the JIT-free but cold paths.
        var warmup: [String] = []
        for _ in 0..<20 { warmup.append(try await placeOrder(on: channel)) }
        try await waitCompleted(warmup, deadline: .seconds(60))
        let before = try await counters()
        let batchesBefore = try await batchCounters()

        // Fixed offered rates: is the fleet keeping up, and how long does an order wait?
        var fixed: [(rate: Int, phase: Phase)] = []
        for rate in rates { fixed.append((rate, try await fixedRate(rate, seconds: seconds, on: channel))) }
        // Saturation: as many orders as can be published.
        let saturation = try await saturation(orders, on: channel)

        let after = try await counters()
        let batchesAfter = try await batchCounters()
        let measured = Double(fixed.reduce(0) { $0 + $1.phase.ids.count } + saturation.ids.count)
        let published = Double(after.outbox - before.outbox) / measured + 1  // + the PlaceOrder itself
        let consumed = Double(after.inbox - before.inbox) / measured
        let transactions = Double(after.commits - before.commits) / measured

        let (hop, brokerRate) = try await brokerBaseline()
        // From PlaceOrder to OrderConfirmed: PlaceOrder, ReserveStock, StockReserved, AuthorizePayment,
        // PaymentAuthorized, CommitReservation, ReservationCommitted, OrderConfirmed.
        let hops = 8.0
        let hopsName = "8 hops through the broker alone"
        var rows: [BenchRow] = []
        func phaseRows(_ phase: Phase, suffix: String, offered: Double?) {
            if let offered {
                rows.append(BenchRow(metric: "checkout.orders\(suffix)", unit: "orders/s", value: phase.rate, baseline: offered,
                                     baselineName: "the offered rate"))
            } else {
                rows.append(BenchRow(metric: "checkout.orders\(suffix)", unit: "orders/s", value: phase.rate, baseline: brokerRate / published,
                                     baselineName: "broker publish-confirm rate / messages per order"))
            }
            for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
                rows.append(BenchRow(metric: "checkout.latency_\(name)\(suffix)", unit: "ms", value: Self.percentile(phase.confirmed, p),
                                     baseline: hops * hop, baselineName: hopsName))
                rows.append(BenchRow(metric: "checkout.latency_completed_\(name)\(suffix)", unit: "ms",
                                     value: Self.percentile(phase.completed, p), baseline: hops * hop, baselineName: hopsName))
            }
            rows.append(BenchRow(metric: "checkout.cpu_ms_per_order\(suffix)", unit: "ms", value: phase.cpuPerOrder(phase.cpu.machine),
                                 baseline: 1000 / phase.rate, baselineName: "one core's milliseconds per completed order"))
            for (group, seconds) in phase.cpu.groups.sorted(by: { $0.key < $1.key }) {
                rows.append(BenchRow(metric: "checkout.cpu_ms_per_order\(suffix).\(group)", unit: "ms", value: phase.cpuPerOrder(seconds),
                                     baseline: phase.cpuPerOrder(phase.cpu.machine), baselineName: "the machine's CPU per order"))
            }
        }
        for (index, (rate, phase)) in fixed.enumerated() {
            // The first rate keeps the names earlier runs used; the others carry their rate.
            phaseRows(phase, suffix: index == 0 ? "_fixed_rate" : "_fixed_rate@\(rate)", offered: Double(rate))
        }
        phaseRows(saturation, suffix: "_saturation", offered: nil)
        rows += [
            BenchRow(metric: "checkout.messages_published_per_order", unit: "messages", value: published, baseline: consumed,
                     baselineName: "messages consumed per order"),
            BenchRow(metric: "checkout.transactions_per_order", unit: "commits", value: transactions, baseline: consumed,
                     baselineName: "messages consumed per order (one transaction each)"),
            BenchRow(metric: "checkout.broker_publish_confirm", unit: "msg/s", value: saturation.rate * published, baseline: brokerRate,
                     baselineName: "1 KB publish-confirm, 100 in flight, this client (bench clients)"),
        ]
        if let walBefore = before.wal, let walAfter = after.wal {
            let records = Double(walAfter.records - walBefore.records) / measured
            rows += [
                BenchRow(metric: "checkout.wal_flushes_per_order", unit: "fsyncs", value: Double(walAfter.flushes - walBefore.flushes) / measured,
                         baseline: transactions,
                         baselineName: "commits per order (a commit that waits for the disk shares a flush when others wait too)"),
                BenchRow(metric: "checkout.wal_records_per_order", unit: "records", value: records, baseline: consumed,
                         baselineName: "messages consumed per order"),
                BenchRow(metric: "checkout.wal_bytes_per_order", unit: "bytes", value: Double(walAfter.bytes - walBefore.bytes) / measured,
                         baseline: records, baselineName: "WAL records per order"),
            ]
        }
        // Batches are transactions of two messages or more (one message alone is not counted).
        let batches = batchesAfter.batches - batchesBefore.batches
        let batched = batchesAfter.messages - batchesBefore.messages
        let batchKey = ShopfleetConfiguration.workerBatch
        let batchSize = Double(ProcessInfo.processInfo.environment[batchKey.name] ?? batchKey.defaultValue) ?? 0
        rows += [
            BenchRow(metric: "checkout.messages_per_batch", unit: "messages", value: batched / max(1, batches), baseline: batchSize,
                     baselineName: "the workers' batch size (\(batchKey.name))"),
            BenchRow(metric: "checkout.batch_fallbacks", unit: "batches", value: batchesAfter.fallbacks - batchesBefore.fallbacks,
                     baseline: batches, baselineName: "batches committed (a fallback handles its batch's messages one by one)"),
        ]
        return rows
    }

    /// The workers' batch counters, summed over the processes (from their `/metrics`).
    private func batchCounters() async throws -> (batches: Double, messages: Double, fallbacks: Double) {
        var totals = (batches: 0.0, messages: 0.0, fallbacks: 0.0)
        for process in fleet.plan.processes where process.kind == .worker {
            let url = "http://127.0.0.1:\(process.opsPort)/metrics"
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
            guard response.status == .ok else { throw ValidationError("\(url) answered \(response.status.code)") }
            let text = String(buffer: try await response.body.collect(upTo: 4 << 20))
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
                if line.hasPrefix("shopfleet_batches_total") { totals.batches += value }
                if line.hasPrefix("shopfleet_batched_messages_total") { totals.messages += value }
                if line.hasPrefix("shopfleet_batch_fallbacks_total") { totals.fallbacks += value }
            }
        }
        return totals
    }

    /// Outbox rows ever written and inbox rows in every schema, the database's commits, and the
    /// server's WAL flushes to disk, records and bytes (`pg_stat_wal`, PostgreSQL 14 to 17: the
    /// whole cluster, in which this bench's database is the one at work; nil where the view is
    /// gone or changed).
    private func counters() async throws -> (outbox: Int, inbox: Int, commits: Int, wal: (flushes: Int, records: Int, bytes: Int)?) {
        var outbox = 0, inbox = 0
        for schema in Self.domains {
            // Rows are deleted once published: their sequence counts them (a batch rolled back
            // and handled again counts its rows twice, as it inserted them twice).
            outbox += try await database.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM \(quoteIdentifier(schema)).outbox_id_seq")[0]
                .decode(Int.self, 0)
            inbox += try await database.query("SELECT count(*) FROM \(quoteIdentifier(schema)).inbox")[0].decode(Int.self, 0)
        }
        let commits = try await database.query("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")[0].decode(Int.self, 0)
        let wal = try? await database.query("SELECT wal_sync, wal_records, wal_bytes::bigint FROM pg_stat_wal")[0]
        return (outbox, inbox, commits, try wal.map { (try $0.decode(Int.self, 0), try $0.decode(Int.self, 1), try $0.decode(Int.self, 2)) })
    }

    /// The broker alone: the median time of one hop (publish with confirm, delivery, ack) through a
    /// quorum queue, and the publish-with-confirm rate with 100 in flight, 1 KB persistent.
    private func brokerBaseline() async throws -> (hopMilliseconds: Double, publishRate: Double) {
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        let queue = "bench-hop-\(UInt32.random(in: 0...UInt32.max))"
        _ = try await channel.declareQueue(queue, arguments: ["x-queue-type": "quorum"])
        let consumerChannel = try await amqp.openChannel()
        try await consumerChannel.setPrefetch(100)
        let consumer = try await consumerChannel.consume(queue: queue)
        var iterator = consumer.makeAsyncIterator()
        let body = [UInt8](repeating: 120, count: 1024)
        var properties = AMQPProperties()
        properties.persistent = true
        var hops: [Double] = []
        for _ in 0..<200 {
            let started = ContinuousClock.now
            try await channel.publish(body, routingKey: queue, properties: properties)
            guard let delivery = try await iterator.next() else { break }
            delivery.ack()
            hops.append(Self.milliseconds(.now - started))
        }
        let messages = 5000
        let persistent = properties
        let rateStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for publisher in 0..<100 {
                group.addTask {
                    for _ in stride(from: publisher, to: messages, by: 100) {
                        try await channel.publish(body, routingKey: queue, properties: persistent)
                    }
                }
            }
            try await group.waitForAll()
        }
        let rate = Double(messages) / (Self.milliseconds(.now - rateStart) / 1000)
        try? await consumer.cancel()
        try? await management.deleteQueue(queue, vhost: vhost)
        return (Self.percentile(hops.sorted(), 0.5), rate)
    }

    func printLogs() {
        for process in fleet.plan.processes {
            let text = (try? String(contentsOfFile: "\(logDirectory)/\(process.name).log", encoding: .utf8)) ?? ""
            Swift.print("==== \(process.name)\n" + text.split(separator: "\n").suffix(20).joined(separator: "\n"))
        }
    }

    func stop() async {
        await fleet.stopAll()
        await amqp.close()
        await database.close()
        await sandbox.remove()
    }
}
