import AMQPClient
import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
@testable import Messaging
import NIOCore
import NIOHTTP1
import PostgresClient
import ShopfleetTesting
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The fixture worker as a real process against a sandbox vhost and a schema of its own, plus a
/// connection to send it messages and look at what it did.
final class FixtureFleet: @unchecked Sendable {
    let sandbox: BrokerSandbox
    let schema: String
    let database: PostgresClient
    let amqp: AMQPConnection
    let channel: AMQPChannel
    let port: Int
    let logFile: String
    private(set) var process: RunningProcess?

    /// The fixture worker sits next to the test executable.
    static var workerBinary: String {
        let exe = ChildProcess.currentExecutable ?? ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/FixtureWorker"
    }

    init() async throws {
        sandbox = try await BrokerSandbox.create()
        schema = TestServers.uniqueName("fixture")
        database = PostgresClient(configuration: try PostgresConfiguration(url: try TestServers.databaseURL()), maximumConnections: 4)
        amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "fixture test"))
        channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        port = TestServers.freePort()
        logFile = "/tmp/\(schema).log"
    }

    /// Runs `body` with a fleet of its own, then tears it down; on failure prints the worker's
    /// log first and runs `onFailure` (to restart a server the test stopped, say).
    static func with(_ body: (FixtureFleet) async throws -> Void,
                     onFailure: () async -> Void = {}) async throws {
        let fleet = try await FixtureFleet()
        do {
            try await body(fleet)
        } catch {
            print(fleet.log)
            await onFailure()
            await fleet.shutdown()
            throw error
        }
        await fleet.shutdown()
    }

    /// Starts the worker and waits until it consumes.
    func start(crash: String? = nil, concurrency: Int = 4, batch: Int = 1, waitReady: Bool = true) async throws {
        process = try spawn(crash: crash, concurrency: concurrency, batch: batch, port: port)
        if !waitReady { return }
        try await waitUntil(deadline: .seconds(30)) { [self] in
            (try? await http("/readyz").status) == 200
        }
    }

    /// Starts a worker that kills itself at `point` (`FIXTURE_CRASH`), with one consumer per queue.
    /// RabbitMQ 3.10 may hand a message a dead consumer gave back to another consumer of the same
    /// dead process before it learns that one died too, and counts each return towards the
    /// delivery limit (3 here): with several idle consumers, one kill can dead-letter the message
    /// (docs/chaos.md). The crash under test is the one at `point`, not that.
    func startToCrash(at point: String) async throws {
        try await start(crash: point, concurrency: 1)
    }

    /// Another worker process on the same queues and schema (a second replica), ready.
    func startReplica(port: Int) async throws -> RunningProcess {
        let replica = try spawn(crash: nil, concurrency: 4, batch: 1, port: port)
        try await waitUntil(deadline: .seconds(30)) { [self] in
            (try? await http("/readyz", port: port).status) == 200
        }
        return replica
    }

    private func spawn(crash: String?, concurrency: Int, batch: Int, port: Int) throws -> RunningProcess {
        var environment = [
            "SHOPFLEET_AMQP_URL": sandbox.amqpURL,
            "SHOPFLEET_DATABASE_URL": try TestServers.databaseURL(),
            "SHOPFLEET_TOPOLOGY_FILE": BrokerSandbox.fixtureFile,
            "SHOPFLEET_HTTP_PORT": String(port),
            "SHOPFLEET_WORKER_CONCURRENCY": String(concurrency),
            "SHOPFLEET_WORKER_BATCH": String(batch),
            "FIXTURE_SCHEMA": schema,
        ]
        if let crash { environment["FIXTURE_CRASH"] = crash }
        return try ChildProcess.spawn([Self.workerBinary], extraEnvironment: environment, logFile: logFile)
    }

    /// Waits for the worker to exit; its status.
    func exited() async throws -> Int32 {
        guard let process else { return -1 }
        return try await withDeadline(.seconds(30)) { await process.wait() }
    }

    func stop(signal: Int32 = SIGTERM) async throws -> Int32 {
        self.signal(signal)
        return try await exited()
    }

    func signal(_ signal: Int32) {
        process?.signal(signal)
    }

    func send(_ envelope: Envelope, to queue: String) async throws {
        try await channel.publish(envelope.body, routingKey: queue, properties: envelope.properties, mandatory: true)
    }

    func send<C: Command>(_ command: C) async throws -> Envelope {
        let envelope = try Envelope(command)
        try await send(envelope, to: C.queue)
        return envelope
    }

    func count(_ table: String, key: String) async throws -> Int {
        let rows = try await database.query("SELECT count(*) FROM \(quoteIdentifier(schema)).\(table) WHERE key = $1", [key])
        return try rows[0].decode(Int.self, 0)
    }

    func waitForCount(_ table: String, key: String, toBe expected: Int, deadline: Duration = .seconds(20)) async throws {
        try await waitUntil(deadline: deadline) { [self] in (try? await count(table, key: key)) == expected }
    }

    /// The next dead letter (the fixture worker does not consume the dead-letter queue).
    func nextDeadLetter(deadline: Duration = .seconds(20)) async throws -> AMQPDelivery {
        let box = DeliveryBox()
        try await waitUntil(deadline: deadline) { [self] in
            if let delivery = try? await channel.get(queue: sandbox.topology.deadLetterQueue, noAck: true) {
                box.set(delivery)
                return true
            }
            return false
        }
        return box.get()!
    }

    struct HTTPResult {
        var status: Int
        var body: String
    }

    func http(_ path: String, port: Int? = nil) async throws -> HTTPResult {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port ?? self.port)\(path)"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        return HTTPResult(status: Int(response.status.code), body: String(buffer: body))
    }

    /// A metric's value summed over its label sets (0 when absent).
    func metric(_ name: String, containing labels: String = "", port: Int? = nil) async throws -> Double {
        let text = try await http("/metrics", port: port).body
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
            guard labels.isEmpty || line.contains(labels), let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            total += value
        }
        return total
    }

    var log: String {
        FileManager.default.contents(atPath: logFile).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }

    func shutdown() async {
        if let process {
            process.signal(SIGKILL)
            _ = await process.wait()
        }
        await amqp.close()
        _ = try? await database.query("DROP SCHEMA IF EXISTS \(quoteIdentifier(schema)) CASCADE")
        await database.close()
        await sandbox.remove()
        unlink(logFile)
    }
}

final class DeliveryBox: Sendable {
    private let value = Mutex<AMQPDelivery?>(nil)
    func set(_ delivery: AMQPDelivery) { value.withLock { $0 = delivery } }
    func get() -> AMQPDelivery? { value.withLock { $0 } }
}

extension AMQPDelivery {
    func header(_ name: String) -> String? { properties.headers?[name]?.string }
}
