import AMQPClient
import ArgumentParser
import AsyncHTTPClient
import Auth
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
import ServiceLifecycle
import Synchronization
import UnixSignals
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet dev`: the whole fleet on one machine, for development (`make run`).
struct DevCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev",
        abstract: "Run the whole fleet locally (make run), see what runs, place a demo order.",
        subcommands: [Run.self, Status.self, Seed.self, Order.self],
        defaultSubcommand: Run.self)

    /// The local fleet's folder: its settings file, state, mail. `SHOPFLEET_DEV_DIR`, by default
    /// `.shopfleet/dev` in the current folder (where `make run` runs).
    static var directory: String { ShopfleetConfiguration.devDirectory }
    static var stateFile: String { "\(directory)/fleet.json" }

    /// What `dev status` reads: the supervisor and each child as last (re)started.
    struct State: Codable, Sendable {
        var supervisor: Int32
        var startedAt: Date
        var processes: [FleetSupervisor.Status]
    }

    /// The vhost the workers use: the one in SHOPFLEET_AMQP_URL, else the topology's.
    static func virtualHost(_ config: ShopfleetConfiguration, _ topology: Topology) -> String {
        guard let path = (try? ServerURL(config.amqpURL, schemes: ["amqp", "amqps"]))?.path, !path.isEmpty else { return topology.vhost }
        return path
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Migrate, apply the topology, seed a demo catalog, run every worker, the payments sandbox and an SMTP sink until Ctrl-C.")

        @Option(help: "Products in the demo catalog.") var products = 300
        @Option(help: "First port for the workers' /healthz, /readyz and /metrics (each replica takes the next).") var firstPort = 9101
        @Option(help: "The edge's /healthz, /readyz and /metrics (each edge replica takes the next; default: right after the workers').")
        var edgeOpsPort: Int?
        @Option(help: ArgumentHelp("Processes per role, competing on the same queues as pods would: 2 for every role, or 2,orders=3,edge=1.",
                                   valueName: "replicas"))
        var replicas: String?
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            if let replicas { _ = try FleetPlan.replicas(parsing: replicas) }
        }

        func run() async throws {
            // The SMTP sink makes its Maildir (mail/new, cur, tmp) itself, if the folder is not there.
            try FileManager.default.createDirectory(atPath: DevCommand.directory, withIntermediateDirectories: true)
            var config = try connection.configuration()
            // A sandbox key of our own, kept in the local fleet file with the rest.
            var generated: [String: String?] = [:]
            if config.value(ShopfleetConfiguration.paymentsAPIKey).isEmpty {
                generated[ShopfleetConfiguration.paymentsAPIKey.name] = "sk_test_" + UUIDv7.generate().replacing("-", with: "")
            }
            if config.value(ShopfleetConfiguration.jwtSigningKey).isEmpty {
                generated[ShopfleetConfiguration.jwtSigningKey.name] = AccessTokens.generateSigningKey(kid: "dev1")
            }
            if config.value(ShopfleetConfiguration.fleetSecret).isEmpty {
                generated[ShopfleetConfiguration.fleetSecret.name] = (UUIDv7.generate() + UUIDv7.generate()).replacing("-", with: "")
            }
            if !generated.isEmpty { config = try ShopfleetConfiguration.current(overrides: generated) }
            if config.value(ShopfleetConfiguration.jwtPublicKeys).isEmpty {
                // The edge verifies with the public half of identity's key.
                let publicKey = try AccessTokens.publicKey(of: config.value(ShopfleetConfiguration.jwtSigningKey))
                config = try ShopfleetConfiguration.current(overrides: generated.merging([ShopfleetConfiguration.jwtPublicKeys.name: publicKey]) { $1 })
            }
            try writeLocalFile(config)
            let environment = Dictionary(uniqueKeysWithValues: ShopfleetConfiguration.keys.map { ($0.name, config.value($0)) })

            say("making each service's database role and schema")
            for line in try await MigrateCommand.provision(secret: config.value(ShopfleetConfiguration.fleetSecret), databaseURL: config.databaseURL) {
                say(line)
            }
            say("migrating")
            for line in try await MigrateCommand.migrate(WorkerCatalog.listed, databaseURL: config.databaseURL) { say(line) }
            say("applying the topology")
            let topology = try Topology(contentsOfFile: config.value(ShopfleetConfiguration.topologyFile))
            let management = try RabbitManagement(url: config.amqpManagementURL)
            let remaining = try await management.apply(topology.render(), vhost: DevCommand.virtualHost(config, topology))
            for difference in remaining.differences { say("topology: \(difference)") }
            say("making each service's broker user")
            _ = try await FleetIdentities(secret: config.value(ShopfleetConfiguration.fleetSecret))
                .applyBrokerUsers(topology, vhost: DevCommand.virtualHost(config, topology), management: management)

            let binary = ChildProcess.currentExecutable ?? CommandLine.arguments[0]
            guard let python = ProcessInfo.processInfo.environment["SHOPFLEET_PYTHON"] else {
                throw ValidationError("SHOPFLEET_PYTHON is not set: start through `make run`, or eval \"$(scripts/servers.sh env dev)\" first (it installs the SMTP sink)")
            }
            let counts = try replicas.map(FleetPlan.replicas(parsing:)) ?? [:]
            let workerProcesses = FleetPlan.workerRoles.reduce(0) { $0 + max(1, counts[$1] ?? 1) }
            let ports = FleetPlan.Ports(
                firstWorker: firstPort, edge: try config.integer(ShopfleetConfiguration.edgePort, in: 0...65535),
                edgeOps: edgeOpsPort ?? firstPort + workerProcesses,
                paymentsSandbox: (try? ServerURL(config.value(ShopfleetConfiguration.paymentsURL), schemes: ["http", "https"]))?.port ?? 12111,
                smtpSink: (try? ServerURL(config.value(ShopfleetConfiguration.smtpURL), schemes: ["smtp"]))?.port ?? 2525)
            let plan = FleetPlan.shop(binary: binary, python: python, environment: environment, ports: ports,
                                      replicas: counts,
                                      mail: .maildir(DevCommand.directory + "/mail"))
            let state = Mutex<FleetSupervisor?>(nil)
            let started = Date()
            let fleet = FleetSupervisor(plan: plan, output: .lines(DevOutput.line)) {
                guard let fleet = state.withLock({ $0 }) else { return }
                try? DevCommand.writeState(State(supervisor: getpid(), startedAt: started, processes: fleet.status()))
            }
            state.withLock { $0 = fleet }
            var logger = Logger(label: "shopfleet.dev")
            logger.logLevel = .warning
            let services = ServiceGroup(services: [fleet], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            let (settings, count) = (config, products)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await waitUntil(deadline: .seconds(30)) { !fleet.status().isEmpty }
                        say("seeding the demo catalog")
                        let seeded = try await DemoCatalog.seed(products: count, config: settings)
                        say(seeded == 0 ? "demo catalog already there" : "sent \(seeded) products with their stock")
                        do {
                            try await fleet.waitUntilReady()
                        } catch {
                            say("\(error); `shopfleet dev status` says more")
                        }
                        printWelcome(plan)
                    } catch is CancellationError {
                    } catch {
                        say("setup step failed (the fleet keeps running): \(error)")
                    }
                }
                // Until Ctrl-C or SIGTERM; then stop the setup if it is still going.
                do { try await services.run() } catch { say("the fleet stopped: \(error)") }
                group.cancelAll()
            }
            say("stopped")
        }

        func writeLocalFile(_ config: ShopfleetConfiguration) throws {
            let lines = ["# Written by `shopfleet dev` (make run): the local fleet's settings, for every shopfleet command run here.",
                         "# Holds passwords; readable by you only. Deleted by nothing: stale values are overwritten on the next start."]
                + ShopfleetConfiguration.keys.filter { config.source($0) != .default }.map { "\($0.name)=\(config.value($0))" }
            let path = ShopfleetConfiguration.localFleetFile
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            guard fd >= 0 else { throw ValidationError("cannot write \(path)") }
            _ = fchmod(fd, 0o600)
            let data = Array((lines.joined(separator: "\n") + "\n").utf8)
            _ = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }

        func printWelcome(_ plan: FleetPlan) {
            emit("""

            ──────────────────────────────────────────────────────────────────────────────
            Shopfleet is running: \(plan.processes.map(\.name).joined(separator: ", ")).
            From another terminal in this folder (no setup needed):

              .build/debug/shopfleet dev order                      place a demo order (prints its id)
              .build/debug/shopfleet saga show <order id>           follow its saga
              .build/debug/shopfleet saga list                      every saga
              .build/debug/shopfleet dev status                     processes, health, queues
              .build/debug/shopfleet dlq groups                     what could not be processed, and why
              .build/debug/shopfleet send --list                    every command you can send
              curl 'http://127.0.0.1:\(plan.replicas(of: "edge").first?.port ?? 8080)/v1/products?q=enamle+mug'   the shop's API (openapi.yaml)

            The storefront: http://127.0.0.1:\(plan.replicas(of: "edge").first?.port ?? 8080)/  (register there, then
            `.build/debug/shopfleet admin grant <your email>` and log in again at /console for the operations console).

            Emails land in \(DevCommand.directory)/mail/new. Ctrl-C stops everything.
            ──────────────────────────────────────────────────────────────────────────────

            """)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every process of the local fleet (role, pid, health, state) and the queues.")
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        struct Output: Encodable {
            struct Process: Encodable {
                var name: String
                var role: String
                var pid: Int32
                var health: String?
                var state: String
                var restarts: Int
            }
            struct Queue: Encodable {
                var name: String
                var messages: Int
                var ready: Int
                var unacked: Int
                var consumers: Int
            }
            var running: Bool
            var processes: [Process]
            var queues: [Queue]
        }

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: DevCommand.stateFile) else {
                throw ValidationError("no local fleet here (\(DevCommand.stateFile) is missing): start one with `make run`")
            }
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let state = try decoder.decode(State.self, from: data)
            let running = kill(state.supervisor, 0) == 0
            var processes: [Output.Process] = []
            for process in state.processes {
                var status = "stopped"
                if running, kill(process.pid, 0) == 0 {
                    status = "running"
                    if let health = process.health {
                        let code = try? await HTTPClient.shared.execute(HTTPClientRequest(url: health), timeout: .seconds(2)).status.code
                        status = code == 200 ? "ready" : code.map { "not ready (\($0))" } ?? "not answering"
                    }
                }
                processes.append(.init(name: process.name, role: process.role, pid: process.pid, health: process.health, state: status, restarts: process.restarts))
            }
            let config = try connection.configuration()
            let topology = try Topology(contentsOfFile: config.value(ShopfleetConfiguration.topologyFile))
            let queues = ((try? await RabbitManagement(url: config.amqpManagementURL).queues(vhost: DevCommand.virtualHost(config, topology))) ?? []).map { queue in
                func int(_ key: String) -> Int { if case .int(let n) = queue[key] { return n }; return 0 }
                var name = ""
                if case .string(let text) = queue["name"] { name = text }
                return Output.Queue(name: name, messages: int("messages"), ready: int("messages_ready"), unacked: int("messages_unacknowledged"),
                                    consumers: int("consumers"))
            }.sorted { $0.name < $1.name }
            if json { return try printJSON(Output(running: running, processes: processes, queues: queues)) }
            print(running ? "local fleet running (supervisor pid \(state.supervisor), started \(age(state.startedAt)) ago)" : "local fleet stopped")
            print(table(["PROCESS", "PID", "STATE", "RESTARTS", "HEALTH"], processes.map {
                [$0.name, String($0.pid), $0.state, String($0.restarts), $0.health ?? "-"]
            }))
            print("")
            print(table(["QUEUE", "MESSAGES", "READY", "UNACKED", "CONSUMERS"], queues.map {
                [$0.name, String($0.messages), String($0.ready), String($0.unacked), String($0.consumers)]
            }))
        }
    }

    struct Seed: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send the demo catalog (products and stock) if it is not there yet.")
        @Option(help: "Products in the demo catalog.") var products = 300
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let sent = try await DemoCatalog.seed(products: products, config: try connection.configuration())
            print(sent == 0 ? "the demo catalog is there already" : "sent \(sent) products with their stock")
        }
    }

    struct Order: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Place a demo order for a demo product; prints the order id.")
        @Option(help: "The product (demo-0001 … demo-0300).") var product = "demo-0001"
        @Option(help: "How many.") var quantity = 1
        @Option(help: "The payment method: pm_card_visa, pm_card_chargeDeclined, pm_card_chargeDeclinedInsufficientFunds.")
        var card = "pm_card_visa"
        @Option(help: "The customer's email.") var email = "ada@example.com"
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let order = PlaceOrder(orderID: UUIDv7.generate(), customerID: "demo-customer", customerEmail: email,
                                   lines: [OrderLineRequest(productID: product, quantity: quantity)], paymentMethod: card,
                                   shippingAddress: Address(name: "Ada Lovelace", line1: "12 St James's Square", postalCode: "SW1Y 4JH",
                                                            city: "London", country: "GB"))
            try order.validate()
            try await sendCommand(order, config: try connection.configuration())
            print(order.orderID)
            let hint = Array("follow it: .build/debug/shopfleet saga show \(order.orderID)\n".utf8)
            _ = hint.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        }
    }
}

func say(_ text: String) { emit("[dev] \(text)") }

extension DevCommand {
    static func writeState(_ state: State) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(state).write(to: URL(fileURLWithPath: stateFile))
    }
}

/// Publishes one command with a confirm.
func sendCommand<C: Command>(_ command: C, config: ShopfleetConfiguration) async throws {
    try await publish(try Envelope(command), to: C.queue, config: config)
}
