import ArgumentParser
import Fleet
import FoundationEssentials
import Messaging
import RabbitManagement
import WorkerHost

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "The broker topology as code: render definitions.json, apply it, diff a live broker.",
        subcommands: [Render.self, Apply.self, Diff.self])

    struct FileOptions: ParsableArguments {
        @Option(help: "The authored topology.")
        var file = "topology/shopfleet.yaml"

        func load() throws -> Topology {
            do {
                return try Topology(contentsOfFile: file)
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write RabbitMQ's definitions.json (exchanges, queues, bindings, policies) and permissions.json (each service's rights; no users, no passwords).")

        @OptionGroup var file: FileOptions
        @Option(help: "Where to write; '-' prints to standard output.")
        var output = "topology/definitions.json"
        @Flag(help: "Write nothing; fail when the file on disk is not what rendering gives.")
        var check = false

        @Option(help: "Where to write each service's broker rights (no passwords); '-' prints to standard output.")
        var permissions = "topology/permissions.json"

        func run() async throws {
            let topology = try file.load()
            try emit(try topology.render().json(), to: output)
            try emit(try topology.renderPermissions(), to: permissions)
        }

        func emit(_ json: String, to path: String) throws {
            if check {
                let current = FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
                guard current == json else {
                    throw ValidationError("\(path) is out of date: run `shopfleet topology render`")
                }
                print("\(path) is up to date")
            } else if path == "-" {
                print(json, terminator: "")
            } else {
                guard FileManager.default.createFile(atPath: path, contents: Data(json.utf8)) else {
                    throw ValidationError("cannot write \(path)")
                }
                // Standard output carries a rendering when either goes to '-': no chatter in it then.
                if output != "-" && permissions != "-" { print("wrote \(path)") }
            }
        }
    }

    /// What `apply` and `diff` share: the file, the management API, the virtual host.
    struct BrokerOptions: ParsableArguments {
        @OptionGroup var file: FileOptions
        @OptionGroup var connection: ConnectionOptions
        @Option(help: "Virtual host (default: the one the topology names).")
        var vhost: String?

        /// The definitions the file renders, and what the broker's virtual host is missing or has
        /// different from them, after `before` ran.
        func compare(before: (RabbitManagement, BrokerDefinitions, String) async throws -> Void = { _, _, _ in })
            async throws -> (want: BrokerDefinitions, diff: TopologyDiff, vhost: String, management: RabbitManagement) {
            let topology = try file.load()
            let management = try RabbitManagement(url: try connection.configuration().amqpManagementURL)
            let vhost = vhost ?? topology.vhost
            let want = topology.render()
            try await before(management, want, vhost)
            let diff = TopologyDiff(want: want, have: try await management.definitions(vhost: vhost))
            for difference in diff.differences { print(difference) }
            return (want, diff, vhost, management)
        }
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load the topology into a broker through the management API, then check it.")

        @OptionGroup var broker: BrokerOptions

        func run() async throws {
            // Queues and exchanges that already exist with other settings are left as they are by
            // the broker: the check after loading says so rather than claim success.
            let config = try broker.connection.configuration()
            let secret = config.value(ShopfleetConfiguration.fleetSecret)
            let identities: FleetIdentities?
            do { identities = secret.isEmpty ? nil : try FleetIdentities(secret: secret) } catch { throw ValidationError("\(error)") }
            let topology = try broker.file.load()
            let (want, diff, vhost, management) = try await broker.compare { management, want, vhost in
                _ = try await management.apply(want, vhost: vhost)
                // One user per service with exactly its rights, when the operator holds the fleet secret.
                if let identities {
                    for entry in try await identities.applyBrokerUsers(topology, vhost: vhost, management: management) {
                        print("user \(entry.user): configure \(entry.configure) write \(entry.write) read \(entry.read)")
                    }
                } else {
                    print("SHOPFLEET_FLEET_SECRET is not set: no service users made (every process would need the operator's)")
                }
            }
            if !diff.isEmpty { throw ExitCode(1) }
            print("applied \(want.exchanges.count) exchanges, \(want.queues.count) queues, \(want.bindings.count) bindings, \(want.policies.count) policies to vhost '\(vhost)' at \(management.redactedURL)")
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print what a live broker lacks or has different; exit 1 when there is something.")

        @OptionGroup var broker: BrokerOptions

        func run() async throws {
            if !(try await broker.compare().diff.isEmpty) { throw ExitCode(1) }
        }
    }
}
