import AMQPClient
import ArgumentParser
import ClientRuntime
import FoundationEssentials
import PostgresClient
import RedisClient
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet bench clients`: the Swift clients against the C libraries and tools they sit on.
///
/// - AMQP: 1 KB persistent messages on a durable quorum queue; publish with 100 confirms in flight,
///   consume with prefetch 100 and an ack per message. Baseline: `bench/amqp_baseline.c`, the same
///   work written directly against rabbitmq-c (compiled here with `cc -O2`). The Swift client sends
///   a burst of acks as one `multiple` ack, so the `_vs_batched_c` rows compare it with the C
///   consumer doing the same on the wire.
/// - PostgreSQL: one connection, transactions of one INSERT + one UPDATE. Baseline: `pgbench -c 1
///   -M extended` running the same SQL; the `_vs_prepared` and `_vs_pipelined` rows set the client
///   (which prepares each statement once and sends BEGIN with the first one) beside pgbench doing
///   the same.
/// - Redis: SET and GET of a 100-byte value, one connection, unpipelined and in pipelines of 100.
///   Baseline: `redis-benchmark -c 1` (`-P 100`). It runs against a throwaway password-less Redis
///   started for the benchmark, since redis-benchmark takes a password only on its command line.
///   The `_per_cpu_second` rows divide GETs by the CPU time the client used (this process, every
///   thread; redis-benchmark's from `getrusage(RUSAGE_CHILDREN)`, its SETs and GETs together).
struct BenchClientsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients",
        abstract: "AMQP, PostgreSQL and Redis client throughput beside C / pgbench / redis-benchmark baselines.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print one JSON object per row: {metric, unit, value, baseline, ratio}.")
    var json = false
    @Option(help: "Messages per AMQP run.")
    var messages = 20_000
    @Option(help: "Seconds per PostgreSQL run.")
    var seconds = 5
    @Option(help: "Operations per unpipelined Redis run (pipelined runs do 10 times as many).")
    var redisOperations = 50_000
    @Option(help: "Rounds per figure; the best round of each side is reported.")
    var rounds = 2
    @Option(help: "Path of bench/amqp_baseline.c (default: found next to the working directory or the executable).")
    var baselineSource: String?
    @Option(help: "Microseconds the connection of the Redis `_spinning` rows polls for a reply before it sleeps.")
    var redisSpinMicroseconds = 100

    @Option(help: "Only these groups (amqp, postgres, redis), comma-separated.")
    var only: String = "amqp,postgres,redis"

    func run() async throws {
        let config = try connection.configuration()
        let groups = Set(only.split(separator: ",").map(String.init))
        var rows: [BenchRow] = []
        // PostgreSQL first: after the AMQP part RabbitMQ keeps the disk and a core busy deleting
        // its quorum queues for a while, which would land on whichever PostgreSQL side runs first.
        if groups.contains("postgres") {
            rows += try await PostgresBench(configuration: try PostgresConfiguration(url: config.databaseURL),
                                            seconds: seconds, rounds: rounds).run()
        }
        if groups.contains("redis") {
            rows += try await RedisBench(operations: redisOperations, rounds: rounds, spin: .microseconds(redisSpinMicroseconds)).run()
        }
        if groups.contains("amqp") {
            rows = try await AMQPBench(configuration: try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet bench"),
                                       messages: messages, rounds: rounds, source: try Self.locateBaselineSource(baselineSource)).run() + rows
        }
        try BenchOutput.print(rows, json: json)
    }

    static func locateBaselineSource(_ given: String?) throws -> String {
        if let given { return given }
        var candidates = ["bench/amqp_baseline.c"]
        let executable = CommandLine.arguments[0]
        if let slash = executable.lastIndex(of: "/") {
            // .build/<config>/shopfleet → the repository root is three levels up.
            candidates.append(String(executable[..<slash]) + "/../../bench/amqp_baseline.c")
            candidates.append(String(executable[..<slash]) + "/../../../bench/amqp_baseline.c")
        }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw ValidationError("cannot find bench/amqp_baseline.c (looked at \(candidates.joined(separator: ", "))); pass --baseline-source")
        }
        return found
    }
}

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/shopfleet-bench-XXXXXX".utf8CString)
    guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw ValidationError("cannot create a temporary directory")
    }
    return String(cString: path)
}

struct AMQPBench {
    var configuration: AMQPConfiguration
    var messages: Int
    var rounds: Int
    var source: String
    let window = 100
    let size = 1024

    func run() async throws -> [BenchRow] {
        let directory = try temporaryDirectory()
        let binary = directory + "/amqp_baseline"
        try await ChildProcess.check(["cc", "-O2", "-o", binary, source, "-lrabbitmq"])
        let environment = [
            "AMQP_HOST": configuration.host, "AMQP_PORT": String(configuration.port), "AMQP_VHOST": configuration.vhost,
            "AMQP_USER": configuration.user, "AMQP_PASSWORD": configuration.password,
        ]
        let connection = try await AMQPConnection.connect(configuration)
        let admin = try await connection.openChannel()
        func freshQueue() async throws -> String {
            let name = "bench-\(UInt32.random(in: 0...UInt32.max))"
            try await admin.declareQueue(name, arguments: ["x-queue-type": "quorum"])
            return name
        }
        func rate(_ output: String) throws -> Double {
            let parts = output.split(separator: " ").compactMap { Double($0.trimmed()) }
            guard parts.count == 2, parts[1] > 0 else { throw ValidationError("amqp_baseline printed '\(output)'") }
            return parts[0] / parts[1]
        }
        var publishC = 0.0, publishSwift = 0.0, consumeC = 0.0, consumeSwift = 0.0
        var publishPinned = 0.0, consumePinned = 0.0, consumeBatchedC = 0.0
        // Each round runs both sides; which goes first alternates, so neither always meets a
        // broker busier with the other's leftovers (quorum queue log compaction).
        for round in 0..<max(1, rounds) {
            let cQueue = try await freshQueue()
            let swiftQueue = try await freshQueue()
            let cPublish = {
                try rate(try await ChildProcess.check(
                    [binary, "publish", cQueue, String(messages), String(size), String(window)], extraEnvironment: environment))
            }
            let cConsume = {
                try rate(try await ChildProcess.check(
                    [binary, "consume", cQueue, String(messages), String(window)], extraEnvironment: environment))
            }
            // The C consumer again, acking each burst with one `multiple` ack as the Swift client
            // does on the wire, on a queue of its own filled by the C publisher (not timed).
            let batchedQueue = try await freshQueue()
            _ = try await ChildProcess.check(
                [binary, "publish", batchedQueue, String(messages), String(size), String(window)], extraEnvironment: environment)
            consumeBatchedC = max(consumeBatchedC, try rate(try await ChildProcess.check(
                [binary, "consume-coalesced", batchedQueue, String(messages), String(window)], extraEnvironment: environment)))
            try await admin.deleteQueue(batchedQueue)
            if round % 2 == 0 {
                publishC = max(publishC, try await cPublish())
                publishSwift = max(publishSwift, try await publish(connection, queue: swiftQueue))
                consumeC = max(consumeC, try await cConsume())
                consumeSwift = max(consumeSwift, try await consume(connection, queue: swiftQueue))
            } else {
                publishSwift = max(publishSwift, try await publish(connection, queue: swiftQueue))
                publishC = max(publishC, try await cPublish())
                consumeSwift = max(consumeSwift, try await consume(connection, queue: swiftQueue))
                consumeC = max(consumeC, try await cConsume())
            }
            // The same work with the Swift loop running on the connection's own thread.
            let pinnedQueue = try await freshQueue()
            publishPinned = max(publishPinned, try await publish(connection, queue: pinnedQueue, pinned: true))
            consumePinned = max(consumePinned, try await consume(connection, queue: pinnedQueue, pinned: true))
            try await admin.deleteQueue(cQueue)
            try await admin.deleteQueue(swiftQueue)
            try await admin.deleteQueue(pinnedQueue)
        }
        await connection.close()
        return [
            BenchRow(metric: "amqp.publish_confirm", unit: "msg/s", value: publishSwift, baseline: publishC,
                     baselineName: "C rabbitmq-c, 100 confirms in flight"),
            BenchRow(metric: "amqp.consume_ack", unit: "msg/s", value: consumeSwift, baseline: consumeC,
                     baselineName: "C rabbitmq-c, prefetch 100"),
            BenchRow(metric: "amqp.publish_confirm_pinned", unit: "msg/s", value: publishPinned, baseline: publishC,
                     baselineName: "C rabbitmq-c, 100 confirms in flight"),
            BenchRow(metric: "amqp.consume_ack_pinned", unit: "msg/s", value: consumePinned, baseline: consumeC,
                     baselineName: "C rabbitmq-c, prefetch 100"),
            BenchRow(metric: "amqp.consume_ack_vs_batched_c", unit: "msg/s", value: consumeSwift, baseline: consumeBatchedC,
                     baselineName: "C rabbitmq-c, prefetch 100, one multiple ack per burst"),
            BenchRow(metric: "amqp.consume_ack_pinned_vs_batched_c", unit: "msg/s", value: consumePinned, baseline: consumeBatchedC,
                     baselineName: "C rabbitmq-c, prefetch 100, one multiple ack per burst"),
        ]
    }

    /// 100 publishers, each awaiting its own confirm: 100 confirms in flight.
    /// `pinned`: the publishing tasks run on the connection's thread (task executor preference).
    func publish(_ connection: AMQPConnection, queue: String, pinned: Bool = false) async throws -> Double {
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: size)
        let properties = AMQPProperties(contentType: "application/octet-stream", persistent: true)
        let start = ContinuousClock.now
        try await withTaskExecutorPreference(pinned ? connection.executor : nil) {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for publisher in 0..<window {
                let share = messages / window + (publisher < messages % window ? 1 : 0)
                group.addTask {
                    for _ in 0..<share {
                        try await channel.publish(body, routingKey: queue, properties: properties)
                    }
                }
            }
            try await group.waitForAll()
        }
        }
        let elapsed = ContinuousClock.now - start
        try await channel.close()
        return Double(messages) / elapsed.seconds
    }

    func consume(_ connection: AMQPConnection, queue: String, pinned: Bool = false) async throws -> Double {
        let channel = try await connection.openChannel()
        try await channel.setPrefetch(UInt16(window))
        let start = ContinuousClock.now
        let messages = self.messages
        let received = try await withTaskExecutorPreference(pinned ? connection.executor : nil) {
            let consumer = try await channel.consume(queue: queue)
            var received = 0
            for try await delivery in consumer {
                delivery.ack()
                received += 1
                if received == messages { break }
            }
            return received
        }
        let elapsed = ContinuousClock.now - start
        try await channel.close()
        return Double(received) / elapsed.seconds
    }
}

struct PostgresBench {
    var configuration: PostgresConfiguration
    var seconds: Int
    var rounds: Int
    let accounts = 1000

    func run() async throws -> [BenchRow] {
        let connection = try await PostgresConnection.connect(configuration)
        try await connection.simpleQuery("""
            DROP TABLE IF EXISTS bench_history; DROP TABLE IF EXISTS bench_accounts;
            CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
            CREATE TABLE bench_history (id bigserial PRIMARY KEY, account int NOT NULL, delta bigint NOT NULL,
                                        created timestamptz NOT NULL DEFAULT now());
            INSERT INTO bench_accounts (id) SELECT generate_series(1, \(accounts));
            """)
        let directory = try temporaryDirectory()
        // The same SQL; the second script sends BEGIN with the INSERT in one round trip, as the
        // client does (a transaction's BEGIN waits for its first statement).
        let plain = """
            \\set aid random(1, \(accounts))
            \\set delta random(-5000, 5000)
            BEGIN;
            INSERT INTO bench_history (account, delta) VALUES (:aid, :delta);
            UPDATE bench_accounts SET balance = balance + :delta WHERE id = :aid;
            END;

            """
        let pipelined = """
            \\set aid random(1, \(accounts))
            \\set delta random(-5000, 5000)
            \\startpipeline
            BEGIN;
            INSERT INTO bench_history (account, delta) VALUES (:aid, :delta);
            \\endpipeline
            UPDATE bench_accounts SET balance = balance + :delta WHERE id = :aid;
            END;

            """
        for (name, sql) in [("transaction.sql", plain), ("pipelined.sql", pipelined)] {
            guard FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(sql.utf8)) else {
                throw ValidationError("cannot write \(directory)/\(name)")
            }
        }
        let c = configuration
        var environment = ["PGHOST": c.host, "PGPORT": String(c.port), "PGUSER": c.user, "PGDATABASE": c.database]
        if let password = c.password { environment["PGPASSWORD"] = password }
        let runPgbench = { (mode: String, script: String) in
            let output = try await ChildProcess.check(
                ["pgbench", "-n", "-c", "1", "-j", "1", "-M", mode, "-T", String(seconds), "-f", directory + "/" + script],
                extraEnvironment: environment)
            guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
                  let tps = Double(line.dropFirst(6).prefix { $0 != " " }) else {
                throw ValidationError("no tps in pgbench output: \(output.suffix(300))")
            }
            return tps
        }
        // The same loop on a connection driven by a thread it could share (as a worker's are, by
        // its AMQP connection's thread), the loop running on that thread as a consumer does.
        let host = ConnectionThread(name: "bench: shared thread")
        let shared = try await PostgresConnection.connect(configuration, on: host)
        func transactions(_ connection: PostgresConnection) async throws -> Double {
            let end = ContinuousClock.now + .seconds(seconds)
            var transactions = 0
            let start = ContinuousClock.now
            while ContinuousClock.now < end {
                let account = Int.random(in: 1...accounts)
                let delta = Int.random(in: -5000...5000)
                try await connection.transaction { tx in
                    try await tx.query("INSERT INTO bench_history (account, delta) VALUES ($1, $2)", account, delta)
                    try await tx.query("UPDATE bench_accounts SET balance = balance + $2 WHERE id = $1", account, delta)
                }
                transactions += 1
            }
            return Double(transactions) / (ContinuousClock.now - start).seconds
        }
        func runSwift(_ connection: PostgresConnection, _ thread: ConnectionThread?) async throws -> Double {
            try await withTaskExecutorPreference(thread) { try await transactions(connection) }
        }
        var pgbench = 0.0, swift = 0.0, prepared = 0.0, pipelinedTPS = 0.0, sharedTPS = 0.0
        for round in 0..<max(1, rounds) {
            if round % 2 == 0 {
                pgbench = max(pgbench, try await runPgbench("extended", "transaction.sql"))
                swift = max(swift, try await runSwift(connection, nil))
            } else {
                swift = max(swift, try await runSwift(connection, nil))
                pgbench = max(pgbench, try await runPgbench("extended", "transaction.sql"))
            }
            prepared = max(prepared, try await runPgbench("prepared", "transaction.sql"))
            pipelinedTPS = max(pipelinedTPS, try await runPgbench("prepared", "pipelined.sql"))
            sharedTPS = max(sharedTPS, try await runSwift(shared, host))
        }
        try await connection.simpleQuery("DROP TABLE bench_history; DROP TABLE bench_accounts;")
        await connection.close()
        await shared.close()
        host.stop()
        return [BenchRow(metric: "postgres.transaction", unit: "tx/s", value: swift, baseline: pgbench,
                         baselineName: "pgbench -c 1 -M extended, same SQL"),
                BenchRow(metric: "postgres.transaction_vs_prepared", unit: "tx/s", value: swift, baseline: prepared,
                         baselineName: "the same, -M prepared (as the client)"),
                BenchRow(metric: "postgres.transaction_vs_pipelined", unit: "tx/s", value: swift, baseline: pipelinedTPS,
                         baselineName: "-M prepared, BEGIN sent with the INSERT"),
                BenchRow(metric: "postgres.transaction_shared_thread", unit: "tx/s", value: sharedTPS, baseline: pipelinedTPS,
                         baselineName: "the same; the connection driven by a shared thread")]
    }
}

struct RedisBench {
    var operations: Int
    var rounds: Int
    /// The spin of the `_spinning` rows' connection.
    var spin: Duration = .microseconds(100)
    let value = [UInt8](repeating: UInt8(ascii: "x"), count: 100)

    func run() async throws -> [BenchRow] {
        let server = try await ThrowawayRedis.start()
        do {
            let rows = try await measure(port: server.port)
            await server.stop()
            return rows
        } catch {
            await server.stop()
            throw error
        }
    }

    private func measure(port: Int) async throws -> [BenchRow] {
        let connection = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: port, spin: .zero))
        func baseline(pipeline: Int) async throws -> (set: Double, get: Double, cpuPerOperation: Double) {
            let n = operations * (pipeline > 1 ? 10 : 1)
            let cpu = CPUTime.waitedChildren()
            let output = try await ChildProcess.check(
                ["redis-benchmark", "-h", "127.0.0.1", "-p", String(port), "-c", "1", "-n", String(n), "-P", String(pipeline),
                 "-d", String(value.count), "-t", "set,get", "--csv"])
            var rates: [String: Double] = [:]
            for line in output.split(separator: "\n") {
                let fields = line.split(separator: ",").map { $0.trimmed(quotes: true) }
                if fields.count >= 2, let rate = Double(fields[1]) { rates[fields[0]] = rate }
            }
            guard let set = rates["SET"], let get = rates["GET"] else {
                throw ValidationError("unexpected redis-benchmark output: \(output.prefix(300))")
            }
            return (set, get, (CPUTime.waitedChildren() - cpu) / Double(2 * n))
        }
        /// The Swift loop's three ways: a task on Swift's pool; the same with a connection whose
        /// thread spins for replies (`RedisConfiguration.spin`); a task on the connection's thread.
        enum Mode: CaseIterable {
            case plain, spinning, pinned
            var suffix: String { self == .plain ? "" : self == .spinning ? "_spinning" : "_pinned" }
        }
        let spinning = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: port, spin: spin))
        /// Operations a second, and CPU seconds (the whole process's, user and system) per operation.
        func swift(pipeline: Int, command: String, mode: Mode) async throws -> (rate: Double, cpuPerOperation: Double) {
            let n = operations * (pipeline > 1 ? 10 : 1)
            let key = "key:__rand_int__"
            let value = self.value
            let make = { command == "SET" ? RedisCommand("SET", key, value) : RedisCommand("GET", key) }
            let connection = mode == .spinning ? spinning : connection
            let start = ContinuousClock.now
            let cpu = CPUTime.process()
            try await withTaskExecutorPreference(mode == .pinned ? connection.executor : nil) {
                if pipeline == 1 {
                    for _ in 0..<n { _ = try await connection.send(make()) }
                } else {
                    let batch = (0..<pipeline).map { _ in make() }
                    for _ in 0..<(n / pipeline) { _ = try await connection.pipeline(batch) }
                }
            }
            return (Double(n) / (ContinuousClock.now - start).seconds, (CPUTime.process() - cpu) / Double(n))
        }
        var rows: [BenchRow] = []
        for pipeline in [1, 100] {
            // The best rate of the rounds, and the least CPU per operation.
            var baseSet = 0.0, baseGet = 0.0, baseCPU = Double.infinity
            var set: [Mode: Double] = [:], get: [Mode: Double] = [:], getCPU: [Mode: Double] = [:]
            for _ in 0..<max(1, rounds) {
                let b = try await baseline(pipeline: pipeline)
                baseSet = max(baseSet, b.set)
                baseGet = max(baseGet, b.get)
                baseCPU = min(baseCPU, b.cpuPerOperation)
                for mode in Mode.allCases {
                    set[mode] = max(set[mode] ?? 0, try await swift(pipeline: pipeline, command: "SET", mode: mode).rate)
                    let measured = try await swift(pipeline: pipeline, command: "GET", mode: mode)
                    get[mode] = max(get[mode] ?? 0, measured.rate)
                    getCPU[mode] = min(getCPU[mode] ?? .infinity, measured.cpuPerOperation)
                }
            }
            let label = pipeline == 1 ? "unpipelined" : "pipelined_\(pipeline)"
            let name = "redis-benchmark -c 1" + (pipeline == 1 ? "" : " -P \(pipeline)")
            for mode in Mode.allCases {
                rows.append(BenchRow(metric: "redis.set_\(label)\(mode.suffix)", unit: "ops/s", value: set[mode]!,
                                     baseline: baseSet, baselineName: name))
                rows.append(BenchRow(metric: "redis.get_\(label)\(mode.suffix)", unit: "ops/s", value: get[mode]!,
                                     baseline: baseGet, baselineName: name))
            }
            // Operations per CPU-second of the client process (redis-benchmark's: its SETs and GETs
            // together): where the time of the rows above goes besides the server's.
            for mode in Mode.allCases {
                rows.append(BenchRow(metric: "redis.get_\(label)\(mode.suffix)_per_cpu_second", unit: "ops/cpu-s",
                                     value: 1 / getCPU[mode]!, baseline: 1 / baseCPU, baselineName: name + " (CPU)"))
            }
        }
        await spinning.close()
        await connection.close()
        return rows
    }
}

/// A password-less Redis on a loopback port, for the benchmark only.
struct ThrowawayRedis {
    var port: Int
    var directory: String

    static func start() async throws -> ThrowawayRedis {
        let directory = try temporaryDirectory()
        let port = Int.random(in: 20_000...29_999)
        let config = """
            bind 127.0.0.1
            port \(port)
            daemonize yes
            pidfile \(directory)/redis.pid
            logfile \(directory)/redis.log
            dir \(directory)
            save ""
            appendonly no

            """
        guard FileManager.default.createFile(atPath: directory + "/redis.conf", contents: Data(config.utf8)) else {
            throw ValidationError("cannot write the benchmark's redis.conf")
        }
        // Not captured: the daemon keeps its inherited stdout open, so a captured pipe never ends.
        let started = try await ChildProcess.run(["redis-server", directory + "/redis.conf"], captureOutput: false)
        guard started.status == 0 else { throw ValidationError("redis-server did not start (see \(directory)/redis.log)") }
        let server = ThrowawayRedis(port: port, directory: directory)
        try await waitUntil(deadline: .seconds(10)) {
            (try? await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: port))) != nil
        }
        return server
    }

    func stop() async {
        if let data = FileManager.default.contents(atPath: directory + "/redis.pid"),
           let pid = Int32(String(decoding: data, as: UTF8.self).trimmed()) {
            kill(pid, SIGTERM)
        }
    }
}
