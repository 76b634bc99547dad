import Contracts
import AMQPClient
import AsyncHTTPClient
import ClientRuntime
import DeadLetters
import FixtureWorker
import Fleet
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import PostgresClient
import ShopfleetTesting
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The fixture worker and `shopfleet worker deadletters`, each a process, on the fixture topology
/// (short retry tiers, delivery limit 3), with a vhost and a database of their own.
final class DeadLetterFleet: Sendable {
    static let topologyFile = TestServers.repositoryRoot + "/Tests/MessagingTests/Fixtures/topology.yaml"

    let sandbox: BrokerSandbox
    let scratch: ScratchDatabase
    var databaseURL: String { scratch.url }
    let database: PostgresClient
    let amqp: AMQPConnection
    let channel: AMQPChannel
    let ports: [String: Int]
    let logDirectory: String
    private let processes = Mutex<[String: RunningProcess]>([:])
    /// Each worker as its own broker user (the rights the fixture topology derives); the dead-letter
    /// store as its own database role too. The `dlq` commands run as the operator.
    let identities: FleetIdentities

    static var directory: String {
        let exe = ChildProcess.currentExecutable ?? ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)])
    }

    var environment: [String: String] {
        ["SHOPFLEET_AMQP_URL": sandbox.amqpURL, "SHOPFLEET_DATABASE_URL": databaseURL, "SHOPFLEET_TOPOLOGY_FILE": Self.topologyFile,
         "SHOPFLEET_WORKER_CONCURRENCY": "4", "FIXTURE_SCHEMA": "fixture", "SHOPFLEET_LOG_LEVEL": "info"]
    }

    private init() async throws {
        sandbox = try await BrokerSandbox.create(topologyFile: Self.topologyFile)
        scratch = try await ScratchDatabase.create("dlq")
        identities = try FleetIdentities(secret: try TestServers.environment("SHOPFLEET_FLEET_SECRET"))
        try await identities.provision(topology: sandbox.topology, vhost: sandbox.vhost, management: sandbox.management, databaseURL: scratch.url)
        database = PostgresClient(configuration: try PostgresConfiguration(url: scratch.url), maximumConnections: 4)
        amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL, connectionName: "dead-letter test"))
        channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        let free = TestServers.freePort(count: 2)
        ports = ["fixture": free, "deadletters": free + 1]
        logDirectory = "/tmp/\(scratch.name)"
        try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
    }

    /// Runs `body` with both workers started and ready; stops them and drops the database and
    /// vhost afterwards, printing their logs if `body` failed.
    static func with(_ body: (DeadLetterFleet) async throws -> Void) async throws {
        let fleet = try await DeadLetterFleet()
        do {
            try fleet.start("deadletters")
            try fleet.start("fixture")
            try await fleet.waitReady("deadletters")
            try await fleet.waitReady("fixture")
            try await body(fleet)
        } catch {
            fleet.printLogs()
            await fleet.shutdown()
            throw error
        }
        await fleet.shutdown()
    }

    func start(_ role: String) throws {
        let argv = role == "fixture" ? [Self.directory + "/FixtureWorker"] : [Self.directory + "/shopfleet", "worker", "deadletters"]
        var environment = self.environment
        environment["SHOPFLEET_HTTP_PORT"] = String(ports[role]!)
        environment["SHOPFLEET_AMQP_URL"] = identities.amqpURL(sandbox.amqpURL, service: role)
        if role == "deadletters" { environment["SHOPFLEET_DATABASE_URL"] = identities.databaseURL(databaseURL, service: role) }
        let process = try ChildProcess.spawn(argv, extraEnvironment: environment, logFile: "\(logDirectory)/\(role).log")
        processes.withLock { $0[role] = process }
    }

    func process(_ role: String) -> RunningProcess? { processes.withLock { $0[role] } }

    func get(_ role: String, _ path: String) async throws -> (status: Int, body: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(ports[role]!)\(path)"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 22)
        return (Int(response.status.code), String(buffer: body))
    }

    func isReady(_ role: String) async -> Bool { (try? await get(role, "/readyz").status) == 200 }

    /// A metric of a worker, summed over the label sets whose line contains `labels`.
    func metric(_ role: String, _ name: String, containing labels: String = "") async throws -> Double {
        var total = 0.0
        for line in try await get(role, "/metrics").body.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard labels.isEmpty || line.contains(labels), let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            total += value
        }
        return total
    }

    func waitReady(_ role: String) async throws {
        try await waitUntil(deadline: .seconds(60)) { [self] in await isReady(role) }
    }

    func shutdown() async {
        let all = processes.withLock { $0 }
        for process in all.values { process.signal(SIGKILL) }
        for process in all.values { _ = await process.wait() }
        await amqp.close()
        await database.close()
        await scratch.drop()
        await sandbox.remove()
    }

    func printLogs() {
        for role in ["fixture", "deadletters"] {
            let text = (try? String(contentsOfFile: "\(logDirectory)/\(role).log", encoding: .utf8)) ?? ""
            print("==== \(role) (last lines)\n" + text.split(separator: "\n").suffix(40).joined(separator: "\n"))
        }
    }

    // MARK: - Talking to it

    @discardableResult
    func send<C: Command>(_ command: C) async throws -> Envelope {
        let envelope = try Envelope(command)
        try await channel.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
        return envelope
    }

    /// `shopfleet <arguments>` against this fleet; its standard output.
    func shopfleet(_ arguments: [String]) async throws -> String {
        try await ChildProcess.check([Self.directory + "/shopfleet"] + arguments, extraEnvironment: environment)
    }

    /// `shopfleet dlq list --status all --json`.
    func letters() async throws -> [DeadLetter] {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode([DeadLetter].self, from: Data(try await shopfleet(["dlq", "list", "--status", "all", "--limit", "100000", "--json"]).utf8))
    }

    /// Waits until the store holds a letter for `messageID`; returns it.
    func waitForLetter(_ messageID: String, where condition: @escaping @Sendable (DeadLetter) -> Bool = { _ in true },
                       deadline: Duration = .seconds(30)) async throws -> DeadLetter {
        let found = Mutex<DeadLetter?>(nil)
        try await waitUntil(deadline: deadline) { [self] in
            let letter = try? await DeadLetterReader(database: database).letters({
                var filter = DeadLetterFilter()
                filter.statuses = []
                filter.limit = 100_000
                return filter
            }()).first { $0.messageID == messageID && condition($0) }
            found.withLock { $0 = letter }
            return letter != nil
        }
        return found.withLock { $0 }!
    }

    func effects(_ key: String) async throws -> [String] {
        try await database.query("SELECT message_id FROM fixture.effects WHERE key = $1", [key]).map { try $0.decode(String.self, 0) }
    }

    func count(_ sql: String, _ binds: [any PostgresEncodable] = []) async throws -> Int {
        try await database.query(sql, binds)[0].decode(Int.self, 0)
    }

    /// Publishes `count` fixture `Work` messages straight to the dead-letter exchange as if each
    /// had used up its retries on `fixture.commands` with `reason(index)`; their message ids.
    func publishExhaustedLetters(_ count: Int, key: String, exchange: String, reason: (Int) -> String) async throws -> Set<String> {
        var ids: Set<String> = []
        for index in 0..<count {
            let envelope = try Envelope(Work(key: key))
            ids.insert(envelope.messageID)
            var properties = envelope.properties
            properties.headers?[Envelope.Header.error] = .string(reason(index))
            properties.headers?[Envelope.Header.errorType] = "retries-exhausted"
            properties.headers?[Envelope.Header.failedQueue] = "fixture.commands"
            properties.headers?[Envelope.Header.failedAt] = .string(Date().formatted(.iso8601))
            try await channel.publish(envelope.body, exchange: exchange, routingKey: "fixture.commands", properties: properties, mandatory: true)
        }
        return ids
    }
}
