import ArgumentParser
import Chaos
import ClientRuntime
import Fleet
import FoundationEssentials
import UnixSignals
import WorkerHost
#if canImport(Glibc)
import Glibc
#endif

/// `shopfleet chaos`: customers shop while processes die and servers restart; then the ledger.
struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Shop through the edge while faults hit the fleet, then prove nothing was lost or done twice.",
        subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a chaos scenario against a fleet of its own; exit 1 on any violation of the ledger.",
            discussion: """
                Starts a fleet of its own (every worker, the edge, the payments sandbox, an SMTP sink and a webhook
                receiver, each role with its replicas) in a vhost and a database of its own on the servers of
                SHOPFLEET_AMQP_URL / _MANAGEMENT_URL / _DATABASE_URL / _REDIS_URL. Customers register, fill carts and
                place orders through the edge (retrying with the same Idempotency-Key on 5xx, 429 and timeouts) while
                a seeded schedule of faults runs. Server faults stop and start the servers through
                SHOPFLEET_SERVERS_SCRIPT and SHOPFLEET_SERVERS_INSTANCE (scripts/servers.sh env sets both): run it
                against servers nothing else needs. Then it waits until everything is quiet and checks the ledger
                from every service's store. See docs/chaos.md.
                """)

        @Option(help: "The preset: ci (about 200 orders, 30 s of faults) or long (2,000 orders, 150 s).") var scenario = "ci"
        @Option(help: "The seed of the fault schedule and of the orders (the same seed, the same schedule).") var seed: UInt64?
        @Option(help: "Orders to place.") var orders: Int?
        @Option(help: "Customers shopping at once.") var customers: Int?
        @Option(help: "Processes per role: 2, or 2,orders=3,edge=1.") var replicas: String?
        @Option(help: "How long faults go on, from the first order (e.g. 30s); orders are spread over it.") var faultsFor: String?
        @Option(help: "Kill a random process every this long: 2s, or 1s-2s; none for no kills.") var killEvery: String?
        @Option(help: "Freeze (SIGSTOP) a random worker at these times, e.g. 40s,115s; none for no freezes.") var freezeAt: String?
        @Option(help: "How long a frozen worker stays frozen (longer than the AMQP heartbeat).") var freezeFor: String?
        @Option(help: "Restart RabbitMQ at these times, e.g. 8s; none for no restart.") var restartBrokerAt: String?
        @Option(help: "Restart PostgreSQL at these times; none for no restart.") var restartDatabaseAt: String?
        @Option(help: "A PostgreSQL outage: LENGTH@TIME, e.g. 45s@60s; none for no outage.") var databaseOutage: String?
        @Option(help: "Restart Redis at these times; none for no restart.") var restartRedisAt: String?
        @Flag(help: "No gateway faults.") var noGatewayFaults = false
        @Option(help: "Write the report as JSON to this file.") var report: String?
        @Option(help: "Draw orders placed and finished over time, with the faults, to this PNG (needs matplotlib in SHOPFLEET_PYTHON).")
        var plot: String?
        @Option(help: "Where runs keep their logs and mail.") var directory = "/tmp/shopfleet-chaos"
        @Option(help: "How long to wait, after the faults, for every order to end and every queue to drain.") var quietFor = "240s"
        @Flag(help: "Keep the run's vhost and database afterwards.") var keep = false
        @Flag(help: "Print the scenario and its fault schedule; run nothing.") var dryRun = false

        func scenarioValue() throws -> ChaosScenario {
            guard var value = ChaosScenario.presets[scenario] else {
                throw ValidationError("--scenario must be one of \(ChaosScenario.presets.keys.sorted().joined(separator: ", ")), not '\(scenario)'")
            }
            do {
                if let seed { value.seed = seed }
                if let orders { value.orders = orders }
                if let customers { value.customers = customers }
                if let replicas { value.replicas = replicas; _ = try FleetPlan.replicas(parsing: replicas) }
                if let faultsFor { value.faultsFor = .milliseconds(Int64(try ChaosScenario.seconds(faultsFor) * 1000)) }
                if let killEvery { value.killEvery = killEvery == "none" ? nil : try ChaosScenario.range(killEvery) }
                if let freezeAt { value.freezeAt = try ChaosScenario.times(freezeAt) }
                if let freezeFor { value.freezeFor = try ChaosScenario.seconds(freezeFor) }
                if let restartBrokerAt { value.restartBrokerAt = try ChaosScenario.times(restartBrokerAt) }
                if let restartDatabaseAt { value.restartDatabaseAt = try ChaosScenario.times(restartDatabaseAt) }
                if let restartRedisAt { value.restartRedisAt = try ChaosScenario.times(restartRedisAt) }
                if let databaseOutage {
                    if databaseOutage == "none" {
                        value.databaseOutage = nil
                    } else {
                        let parts = databaseOutage.split(separator: "@").map(String.init)
                        guard parts.count == 2 else { throw ValidationError("--database-outage must be LENGTH@TIME, e.g. 45s@60s") }
                        value.databaseOutage = .init(at: try ChaosScenario.seconds(parts[1]), seconds: try ChaosScenario.seconds(parts[0]))
                    }
                }
                if noGatewayFaults { value.gateway = [] }
            } catch let error as ScenarioError {
                throw ValidationError(error.description)
            } catch let error as PlanError {
                throw ValidationError(error.description)
            }
            guard value.orders >= 1, value.customers >= 1 else { throw ValidationError("--orders and --customers must be at least 1") }
            return value
        }

        func run() async throws {
            let chosen = try scenarioValue()
            let config = try ShopfleetConfiguration.current()
            let environment = ProcessInfo.processInfo.environment
            let binary = ChildProcess.currentExecutable ?? CommandLine.arguments[0]
            if dryRun {
                let plan = FleetPlan.shop(binary: binary, python: "python", environment: [:], ports: .block(from: 20_000, edges: 2),
                                          replicas: try FleetPlan.replicas(parsing: chosen.replicas))
                print("scenario \(chosen.name), seed \(chosen.seed): \(chosen.orders) orders by \(chosen.customers) customers over \(chosen.faultsFor)")
                for fault in ChaosRun.schedule(chosen, plan: plan) { print("t=\(Fault.format(fault.at))s \(fault.fault.summary)") }
                return
            }
            guard let python = environment["SHOPFLEET_PYTHON"] else {
                throw ValidationError("SHOPFLEET_PYTHON is not set: eval \"$(scripts/servers.sh env <instance>)\" first (it has the SMTP sink)")
            }
            let servers = ChaosRun.Servers(amqpURL: config.amqpURL, managementURL: config.amqpManagementURL, databaseURL: config.databaseURL,
                                           redisURL: config.redisURL, script: environment["SHOPFLEET_SERVERS_SCRIPT"],
                                           instance: environment["SHOPFLEET_SERVERS_INSTANCE"],
                                           fleetSecret: config.value(ShopfleetConfiguration.fleetSecret))
            let serverFaults = !chosen.restartBrokerAt.isEmpty || !chosen.restartDatabaseAt.isEmpty || chosen.databaseOutage != nil
                || !chosen.restartRedisAt.isEmpty
            if serverFaults, servers.script == nil || servers.instance == nil {
                throw ValidationError("the scenario restarts servers, but SHOPFLEET_SERVERS_SCRIPT and SHOPFLEET_SERVERS_INSTANCE are not set: "
                                      + "eval \"$(scripts/servers.sh env <instance>)\", or pass --restart-broker-at none --restart-database-at none --database-outage none --restart-redis-at none")
            }
            let run = ChaosRun(scenario: chosen, servers: servers, binary: binary, python: python,
                               topologyFile: config.value(ShopfleetConfiguration.topologyFile),
                               openAPIFile: config.value(ShopfleetConfiguration.openAPIFile), directory: directory,
                               quietDeadline: .milliseconds(Int64(try ChaosScenario.seconds(quietFor) * 1000)), keep: keep) { emit("[chaos] \($0)") }
            // Ctrl-C (or SIGTERM) stops the run: the fleet is stopped, a server it stopped is
            // started again, its vhost and database are removed.
            let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
            let finished = try await withThrowingTaskGroup(of: ChaosReport?.self) { group -> ChaosReport? in
                group.addTask { try await run.run() }
                group.addTask {
                    for await signal in signals {
                        emit("[chaos] \(signal): stopping the run and cleaning up")
                        return nil
                    }
                    return nil
                }
                defer { group.cancelAll() }
                if let report = try await group.next() ?? nil { return report }
                group.cancelAll()
                _ = try? await group.next()
                return nil
            }
            guard let result = finished else { throw ExitCode(130) }
            if let report {
                try result.json().write(to: URL(fileURLWithPath: report))
            }
            if let plot {
                guard let report else { throw ValidationError("--plot draws from the report: give --report too") }
                let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                    .appendingPathComponent("scripts/chaos_plot.py").path
                let local = FileManager.default.fileExists(atPath: "scripts/chaos_plot.py") ? "scripts/chaos_plot.py" : script
                do {
                    try await ChildProcess.check([python, local, report, plot])
                } catch {
                    emit("[chaos] could not draw \(plot): \(error)")
                }
            }
            print(result.text())
            if !result.passed { throw ExitCode(1) }
        }
    }
}
