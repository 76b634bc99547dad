import Auth
import AMQPClient
import ArgumentParser
import AsyncHTTPClient
import ClientRuntime
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

/// `shopfleet bench worker`: the worker runtime against the floor the broker and the database set.
///
/// - (a) `worker.consume_noop`: a handler that does nothing (no transaction), consuming 1 KB
///   persistent messages from a quorum queue with one consumer, prefetch 100, beside the C consumer
///   of `bench clients` doing the same on an identical queue.
/// - (b) `worker.inbox_outbox`: a handler that inserts one row and publishes one event, so each
///   message costs the inbox row, the row, the outbox row, the commit, the publish with confirm,
///   the ack, and deleting the row once confirmed (batched); beside `pgbench` running the same transaction
///   with as many clients as the worker has handlers in flight.
/// - (c) `worker.rss_idle` and `worker.rss_load`: resident memory of a worker process
///   (`shopfleet worker bench`, which runs as `shopfleet-worker` like every runtime-only domain)
///   idle and while it handles (b)'s load; the baseline is the target.
/// - (d) `worker.rss_idle.<domain>`: each worker of the fleet idle, as `shopfleet worker <domain>`.
///
/// Everything runs in a virtual host of its own, deleted afterwards.
struct BenchWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Worker runtime throughput and memory beside the C consumer and pgbench.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print one JSON object per row: {metric, unit, value, baseline, ratio}.")
    var json = false
    @Option(help: "Messages per run.")
    var messages = 10_000
    @Option(help: "Handlers in flight (and pgbench clients).")
    var concurrency = 8
    @Option(help: "Rounds per figure; the best round of each side is reported.")
    var rounds = 2
    @Option(help: "Path of bench/amqp_baseline.c (default: found next to the working directory or the executable).")
    var baselineSource: String?
    @Option(help: "Only these parts (noop, tx, memory, domains), comma-separated.")
    var only = "noop,tx,memory,domains"

    func run() async throws {
        let config = try connection.configuration()
        let parts = Set(only.split(separator: ",").map(String.init))
        let source = try BenchClientsCommand.locateBaselineSource(baselineSource)
        let bench = try await WorkerBench.create(config: config, messages: messages, concurrency: concurrency)
        do {
            let rows = try await bench.run(rounds: rounds, baselineSource: source, parts: parts)
            await bench.remove()
            try BenchOutput.print(rows, json: json)
        } catch {
            await bench.remove()
            throw error
        }
    }
}

final class WorkerBench: Sendable {
    static let topologyYAML = """
        dead_letters: {exchange: bench.dead-letters, queue: bench.dead-letters}
        retry: {exchange_prefix: bench.retry, return_exchange: bench.retry-return, tiers: [1s]}
        topics: [bench.events]
        queues:
          - name: bench.noop
          - name: bench.c
          - name: bench.tx
          - name: bench.sink
            subscriptions: [{topic: bench.events}]
        """

    let config: ShopfleetConfiguration
    let management: RabbitManagement
    let vhost: String
    let amqpURL: String
    let amqpConfiguration: AMQPConfiguration
    let topology: Topology
    let schema = BenchDomain.schema
    let pgbenchSchema = "bench_pgbench"
    let messages: Int
    let concurrency: Int
    let directory: String

    private init(config: ShopfleetConfiguration, management: RabbitManagement, vhost: String, amqpURL: String,
                 topology: Topology, messages: Int, concurrency: Int, directory: String) throws {
        self.config = config
        self.management = management
        self.vhost = vhost
        self.amqpURL = amqpURL
        self.amqpConfiguration = try AMQPConfiguration(url: amqpURL, connectionName: "shopfleet bench worker")
        self.topology = topology
        self.messages = messages
        self.concurrency = concurrency
        self.directory = directory
    }

    static func create(config: ShopfleetConfiguration, messages: Int, concurrency: Int) async throws -> WorkerBench {
        let management = try RabbitManagement(url: config.amqpManagementURL)
        let base = try ServerURL(config.amqpURL, schemes: ["amqp"])
        let vhost = "shopfleet-bench-\(UInt32.random(in: 0...UInt32.max))"
        let topology = try Topology(yaml: topologyYAML, source: "bench topology")
        try await management.createVirtualHost(vhost, for: base.user ?? "guest", loading: topology.render())
        let directory = try temporaryDirectory()
        return try WorkerBench(config: config, management: management, vhost: vhost,
                               amqpURL: RabbitManagement.amqpURL(config.amqpURL, virtualHost: vhost),
                               topology: topology, messages: messages, concurrency: concurrency, directory: directory)
    }

    func remove() async {
        try? await management.deleteVirtualHost(vhost)
    }

    func run(rounds: Int, baselineSource: String, parts: Set<String>) async throws -> [BenchRow] {
        let database = PostgresClient(configuration: try PostgresConfiguration(url: config.databaseURL), maximumConnections: concurrency + 2)
        let definition = BenchDomain.definition()
        // pgbench gets tables of its own: rows it leaves unpublished in the worker's outbox would
        // keep the worker's relay busy.
        for schema in [schema, pgbenchSchema] {
            try await database.query("DROP SCHEMA IF EXISTS \(schema) CASCADE")
            try await Migrator(client: database, schema: schema).migrate(try RuntimeMigrations.with(definition.migrations))
        }
        let amqp = try await AMQPConnection.connect(amqpConfiguration)
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()

        let binary = directory + "/amqp_baseline"
        try await ChildProcess.check(["cc", "-O2", "-o", binary, baselineSource, "-lrabbitmq"])
        var rows: [BenchRow] = []
        if parts.contains("noop") {
            var swift = 0.0, c = 0.0, batchedC = 0.0
            for round in 0..<max(1, rounds) {
                if round % 2 == 0 { c = max(c, try await consumeC(binary, channel: channel)) }
                swift = max(swift, try await runWorker(queue: BenchNoop.queue, channel: channel, database: database))
                if round % 2 == 1 { c = max(c, try await consumeC(binary, channel: channel)) }
                batchedC = max(batchedC, try await consumeC(binary, channel: channel, batched: true))
            }
            rows.append(BenchRow(metric: "worker.consume_noop", unit: "msg/s", value: swift, baseline: c,
                                 baselineName: "C rabbitmq-c consumer, prefetch 100"))
            rows.append(BenchRow(metric: "worker.consume_noop_vs_batched_c", unit: "msg/s", value: swift, baseline: batchedC,
                                 baselineName: "the same, one multiple ack per burst"))
        }
        if parts.contains("tx") {
            var swift = 0.0, pg = 0.0, prepared = 0.0, pipelined = 0.0
            for round in 0..<max(1, rounds) {
                if round % 2 == 0 { pg = max(pg, try await pgbench(.extended)) }
                swift = max(swift, try await runWorker(queue: BenchRecord.queue, channel: channel, database: database))
                if round % 2 == 1 { pg = max(pg, try await pgbench(.extended)) }
                prepared = max(prepared, try await pgbench(.prepared))
                pipelined = max(pipelined, try await pgbench(.pipelined))
                _ = try await channel.purgeQueue("bench.sink")
            }
            rows.append(BenchRow(metric: "worker.inbox_outbox", unit: "msg/s", value: swift, baseline: pg,
                                 baselineName: "pgbench -c \(concurrency) -M extended, the same transaction"))
            rows.append(BenchRow(metric: "worker.inbox_outbox_vs_prepared", unit: "msg/s", value: swift, baseline: prepared,
                                 baselineName: "the same, -M prepared (as the worker)"))
            rows.append(BenchRow(metric: "worker.inbox_outbox_vs_pipelined", unit: "msg/s", value: swift, baseline: pipelined,
                                 baselineName: "-M prepared, the worker's 1 round trip"))
        }
        if parts.contains("memory") {
            let memory = try await measureMemory(channel: channel)
            rows.append(BenchRow(metric: "worker.rss_idle", unit: "MB", value: memory.idle, baseline: 40, baselineName: "target: under 40 MB"))
            rows.append(BenchRow(metric: "worker.rss_load", unit: "MB", value: memory.load, baseline: 40, baselineName: "the idle target, for scale"))
        }
        if parts.contains("domains") {
            rows += try await measureDomains()
        }
        for schema in [schema, pgbenchSchema] { try await database.query("DROP SCHEMA IF EXISTS \(schema) CASCADE") }
        await database.close()
        await amqp.close()
        return rows
    }

    /// Fills a queue with `messages` envelopes of 1 KB, confirmed.
    func fill<C: Command>(_ queue: String, channel: AMQPChannel, make: @escaping @Sendable (Int) -> C) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let publishers = 100
            for p in 0..<publishers {
                group.addTask {
                    var n = p
                    while n < self.messages {
                        let envelope = try Envelope(make(n))
                        try await channel.publish(envelope.body, routingKey: queue, properties: envelope.properties, mandatory: true)
                        n += publishers
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static let padding = String(repeating: "x", count: 1000)

    /// `batched`: the C consumer sends one multiple ack per burst, as the Swift client does on the wire.
    func consumeC(_ binary: String, channel: AMQPChannel, batched: Bool = false) async throws -> Double {
        try await fill("bench.c", channel: channel) { BenchNoop(n: $0, padding: Self.padding) }
        let environment = [
            "AMQP_HOST": amqpConfiguration.host, "AMQP_PORT": String(amqpConfiguration.port), "AMQP_VHOST": vhost,
            "AMQP_USER": amqpConfiguration.user, "AMQP_PASSWORD": amqpConfiguration.password,
        ]
        let output = try await ChildProcess.check([binary, batched ? "consume-coalesced" : "consume", "bench.c", String(messages), "100"],
                                                  extraEnvironment: environment)
        let parts = output.split(separator: " ").compactMap { Double($0.trimmed()) }
        guard parts.count == 2, parts[1] > 0 else { throw ValidationError("amqp_baseline printed '\(output)'") }
        return parts[0] / parts[1]
    }

    /// Fills `queue`, then runs a worker on it in this process until every message is done.
    func runWorker(queue: String, channel: AMQPChannel, database: PostgresClient) async throws -> Double {
        if queue == BenchNoop.queue {
            try await fill(queue, channel: channel) { BenchNoop(n: $0, padding: Self.padding) }
        } else {
            try await fill(queue, channel: channel) { BenchRecord(n: $0, padding: Self.padding) }
        }
        let done = Countdown(messages)
        let amqp = try await AMQPConnection.connect(amqpConfiguration)
        var options = WorkerOptions(service: "bench", schema: schema, queues: [queue])
        options.prefetch = 100
        // The no-op run matches the C consumer: one consumer, prefetch 100. The transactional run
        // has `concurrency` consumers, as many as pgbench has clients.
        options.concurrency = queue == BenchNoop.queue ? 1 : concurrency
        var hooks = WorkerHooks()
        hooks.afterAck = { _ in done.tick() }
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        // As `shopfleet worker` does: the worker's PostgreSQL connections are driven by its AMQP
        // connection's thread, where its consumers run.
        let workerDatabase = PostgresClient(configuration: database.configuration, maximumConnections: options.concurrency + 2,
                                            on: amqp.connectionThread)
        let worker = Worker(options: options, topology: topology, handlers: BenchDomain.definition().handlers,
                            amqp: amqp, database: workerDatabase, logger: logger, hooks: hooks)
        let start = ContinuousClock.now
        let task = Task { try await worker.run() }
        // Woken by the last ack rather than polling: a poll every few milliseconds would take CPU
        // (timers, wake-ups) from the worker it measures.
        try await withDeadline(.seconds(600)) { await done.wait() }
        if queue == BenchRecord.queue {
            // Done means published too: every outbox row confirmed by the broker and deleted.
            let unpublished = "SELECT count(*) FROM \(quoteIdentifier(schema)).outbox WHERE published_at IS NULL"
            try await waitUntil(deadline: .seconds(600), interval: .milliseconds(2)) {
                (try? await database.query(unpublished)[0].decode(Int.self, 0)) == 0
            }
        }
        let elapsed = ContinuousClock.now - start
        await worker.stopConsuming()
        task.cancel()
        _ = try? await task.value
        await workerDatabase.close()
        await amqp.close()
        return Double(messages) / elapsed.seconds
    }

    /// How pgbench sends the transaction.
    enum PgbenchMode {
        /// Each statement parsed and planned on every run (unnamed statements), one round trip each.
        case extended
        /// Each statement prepared once per connection, as the worker's client does.
        case prepared
        /// Prepared, and in the worker's one round trip: BEGIN, the inbox row, the handler's row,
        /// the outbox row and COMMIT in one pipeline (pgbench's `\startpipeline`).
        case pipelined
    }

    /// pgbench with the transaction the worker runs per message: inbox row, the handler's row,
    /// outbox row (returning its id), commit. The worker also deletes published rows, in
    /// batches; pgbench does not, so the baseline does a little less work than the worker.
    func pgbench(_ mode: PgbenchMode) async throws -> Double {
        let s = quoteIdentifier(pgbenchSchema)
        let script = directory + "/inbox_outbox.sql"
        let inbox = "INSERT INTO \(s).inbox (message_id, type, queue) VALUES (gen_random_uuid()::text, 'bench.Record.v1', 'bench.tx');"
        let record = "INSERT INTO \(s).records (n, message_id) VALUES (:n, gen_random_uuid()::text);"
        let outbox = "INSERT INTO \(s).outbox (message_id, type, exchange, routing_key, correlation_id, causation_id, saga_id, traceparent, tracestate, reply_to, body) VALUES (gen_random_uuid()::text, 'bench.Recorded.v1', 'bench.events', 'bench.Recorded.v1', gen_random_uuid()::text, gen_random_uuid()::text, NULL, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', NULL, NULL, convert_to(repeat('x', 20), 'UTF8')) RETURNING id;"
        let sql = mode == .pipelined
            ? ["\\set n random(1, 1000000000)", "\\startpipeline", "BEGIN;", inbox, record, outbox, "END;", "\\endpipeline",
               ""].joined(separator: "\n")
            : ["\\set n random(1, 1000000000)", "BEGIN;", inbox, record, outbox, "END;", ""].joined(separator: "\n")
        guard FileManager.default.createFile(atPath: script, contents: Data(sql.utf8)) else {
            throw ValidationError("cannot write \(script)")
        }
        let c = try PostgresConfiguration(url: config.databaseURL)
        var environment = ["PGHOST": c.host, "PGPORT": String(c.port), "PGUSER": c.user, "PGDATABASE": c.database]
        if let password = c.password { environment["PGPASSWORD"] = password }
        let output = try await ChildProcess.check(
            ["pgbench", "-n", "-c", String(concurrency), "-j", "2", "-M", mode == .extended ? "extended" : "prepared", "-t", String(max(1, messages / concurrency)), "-f", script],
            extraEnvironment: environment)
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
              let tps = Double(line.dropFirst(6).prefix { $0 != " " }) else {
            throw ValidationError("no tps in pgbench output: \(output.suffix(300))")
        }
        return tps
    }

    /// Resident memory of a worker process, idle and under (b)'s load.
    func measureMemory(channel: AMQPChannel) async throws -> (idle: Double, load: Double) {
        let topologyFile = directory + "/topology.yaml"
        guard FileManager.default.createFile(atPath: topologyFile, contents: Data(Self.topologyYAML.utf8)) else {
            throw ValidationError("cannot write \(topologyFile)")
        }
        let port = LocalPort.free()
        guard let executable = ChildProcess.currentExecutable else { throw ValidationError("cannot find this executable") }
        guard WorkerCatalog.slimExecutable != nil else {
            throw ValidationError("\(WorkerCatalog.slimName) is not built beside \(executable): build it (`swift build -c release --product \(WorkerCatalog.slimName)`), the memory figures are of that binary")
        }
        // `shopfleet worker bench` runs as `shopfleet-worker`, exactly as a deployed worker does.
        let child = try ChildProcess.spawn(
            [executable, "worker", BenchDomain.name, "--port", String(port)],
            extraEnvironment: ["SHOPFLEET_AMQP_URL": amqpURL, "SHOPFLEET_DATABASE_URL": config.databaseURL,
                               "SHOPFLEET_TOPOLOGY_FILE": topologyFile, "SHOPFLEET_WORKER_PREFETCH": "100",
                               "SHOPFLEET_WORKER_CONCURRENCY": String(concurrency), "SHOPFLEET_LOG_LEVEL": "warning"],
            logFile: directory + "/worker-child.log")
        defer { child.signal(SIGKILL) }
        try await Self.waitReady(port: port)
        printMemorySplit("idle", child.pid)
        let idle = try await Self.idleMegabytes(child.pid)
        let database = PostgresClient(configuration: try PostgresConfiguration(url: config.databaseURL), maximumConnections: 1)
        let before = try await database.query("SELECT count(*) FROM \(quoteIdentifier(schema)).records")[0].decode(Int.self, 0)
        let target = before + messages
        let peak = Atomic<Int>(0)
        let sampler = Task {
            while !Task.isCancelled {
                let mb = Int((try? Self.residentMegabytes(child.pid)) ?? 0)
                if mb > peak.load(ordering: .relaxed) { peak.store(mb, ordering: .relaxed) }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        try await fill(BenchRecord.queue, channel: channel) { BenchRecord(n: $0, padding: Self.padding) }
        try await waitUntil(deadline: .seconds(600), interval: .milliseconds(100)) {
            (try? await database.query("SELECT count(*) FROM \(quoteIdentifier(self.schema)).records")[0].decode(Int.self, 0)) ?? 0 >= target
        }
        sampler.cancel()
        printMemorySplit("after load", child.pid)
        await database.close()
        child.signal(SIGTERM)
        _ = try await withDeadline(.seconds(30)) { await child.wait() }
        return (idle, Double(peak.load(ordering: .relaxed)))
    }

    /// Idle resident memory of each worker of the fleet, started as `shopfleet worker <domain>` on
    /// the fleet's topology in a virtual host of its own (against the configured database, whose
    /// domain schemas it migrates like any start of a worker). The baseline is the target; its
    /// name says which executable ran the worker.
    func measureDomains() async throws -> [BenchRow] {
        let topologyFile = config.value(ShopfleetConfiguration.topologyFile)
        let topology = try Topology(contentsOfFile: topologyFile)
        let user = try ServerURL(config.amqpURL, schemes: ["amqp"]).user ?? "guest"
        let fleetVHost = vhost + "-fleet"
        try await management.createVirtualHost(fleetVHost, for: user, loading: topology.render())
        guard let executable = ChildProcess.currentExecutable else { throw ValidationError("cannot find this executable") }
        let environment = [
            "SHOPFLEET_AMQP_URL": RabbitManagement.amqpURL(config.amqpURL, virtualHost: fleetVHost),
            "SHOPFLEET_DATABASE_URL": config.databaseURL,
            "SHOPFLEET_TOPOLOGY_FILE": topologyFile,
            "SHOPFLEET_PAYMENTS_API_KEY": "sk_bench_memory",
            "SHOPFLEET_JWT_SIGNING_KEY": AccessTokens.generateSigningKey(kid: "bench"),
            "SHOPFLEET_LOG_LEVEL": "warning",
        ]
        var rows: [BenchRow] = []
        do {
            for domain in WorkerCatalog.fleet {
                let port = LocalPort.free()
                let child = try ChildProcess.spawn([executable, "worker", domain, "--port", String(port)],
                                                   extraEnvironment: environment, logFile: directory + "/\(domain).log")
                defer { child.signal(SIGKILL) }
                try await Self.waitReady(port: port)
                let idle = try await Self.idleMegabytes(child.pid)
                let runs = ChildProcess.executable(of: child.pid).map { String($0.split(separator: "/").last ?? "?") } ?? "?"
                child.signal(SIGTERM)
                _ = try await withDeadline(.seconds(30)) { await child.wait() }
                rows.append(BenchRow(metric: "worker.rss_idle.\(domain)", unit: "MB", value: idle, baseline: 40,
                                     baselineName: "target: under 40 MB (runs as \(runs))"))
            }
        } catch {
            try? await management.deleteVirtualHost(fleetVHost)
            throw error
        }
        try? await management.deleteVirtualHost(fleetVHost)
        return rows
    }

    static func waitReady(port: Int) async throws {
        try await waitUntil(deadline: .seconds(30)) {
            let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/readyz")
            return (try? await HTTPClient.shared.execute(request, timeout: .seconds(2)))?.status == .ok
        }
    }

    /// The `Name:` lines of `/proc/<pid>/status`.
    static func status(_ pid: pid_t) throws -> [Substring: Substring] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/status") else {
            throw ValidationError("cannot read /proc/\(pid)/status")
        }
        var fields: [Substring: Substring] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].trimmed()[...]
        }
        return fields
    }

    /// Resident memory of an idle process: the largest of ten samples over a second.
    static func idleMegabytes(_ pid: pid_t) async throws -> Double {
        var idle = 0.0
        for _ in 0..<10 {
            idle = max(idle, try residentMegabytes(pid))
            try await Task.sleep(for: .milliseconds(100))
        }
        return idle
    }

    static func residentMegabytes(_ pid: pid_t) throws -> Double {
        guard let kb = try status(pid)["VmRSS"]?.split(separator: " ").first.flatMap({ Double($0) }) else {
            throw ValidationError("no VmRSS in /proc/\(pid)/status")
        }
        return kb / 1024
    }

    /// With `SHOPFLEET_BENCH_DEBUG` set: private and file-backed resident memory, and threads.
    func printMemorySplit(_ moment: String, _ pid: pid_t) {
        guard getenv("SHOPFLEET_BENCH_DEBUG") != nil, let fields = try? Self.status(pid) else { return }
        print("\(moment): " + ["RssAnon", "RssFile", "Threads"].map { "\($0) \(fields[$0[...]] ?? "?")" }.joined(separator: ", "))
    }
}

/// Counts down to zero from the thread that ticks; `wait` returns once it got there (or when the
/// waiting task is cancelled).
final class Countdown: Sendable {
    private struct State {
        var left: Int
        var waiter: UnsafeContinuation<Void, Never>?
        var cancelled = false
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(left: count)) }

    func tick() {
        let waiter = state.withLock { s -> UnsafeContinuation<Void, Never>? in
            s.left -= 1
            guard s.left <= 0 else { return nil }
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.left <= 0 || s.cancelled { return true }
                    s.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { s -> UnsafeContinuation<Void, Never>? in
                s.cancelled = true
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume()
        }
    }
}
