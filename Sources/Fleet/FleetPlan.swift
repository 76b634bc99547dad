/// Which processes make a local fleet, with which settings: the one description that `shopfleet
/// dev`, `shopfleet bench checkout`, `shopfleet chaos run` and the tests all start. Each replica of
/// a role is a process of its own with its own ops port, competing with its siblings on the same
/// queues, as pods of one Deployment would.
///
/// A plan is a value: building one starts nothing (``FleetSupervisor`` does), so what a fleet is
/// made of can be read and tested without a server.
public struct FleetPlan: Sendable, Equatable {
    /// What a process is, for whoever needs to tell them apart (the chaos runner kills only
    /// Shopfleet's own processes; the gateway and the mail sink stand for the outside world).
    public enum Kind: String, Sendable, Equatable, Codable {
        case worker, edge, paymentsSandbox = "payments-sandbox", smtpSink = "smtp-sink"
    }

    /// One process of the fleet.
    public struct Process: Sendable, Equatable, Identifiable {
        /// `orders`, or `orders-2` when the role has several replicas.
        public var name: String
        /// The worker domain or the kind's name: `orders`, `edge`, `payments-sandbox`.
        public var role: String
        public var kind: Kind
        /// 1 for the first replica.
        public var replica: Int
        public var argv: [String]
        /// Settings of this process only, added to the fleet's shared ``FleetPlan/environment``.
        public var environment: [String: String]
        /// The port it serves: a worker's ops port, the edge's public port, the sandbox's, the sink's.
        public var port: Int
        /// Where `/healthz`, `/readyz` and `/metrics` answer: a worker's `port`; the edge's own ops port.
        public var opsPort: Int
        /// The URL that answers 200 when it is ready; nil for a process without one (the sink).
        public var health: String?

        public var id: String { name }

        public init(name: String, role: String, kind: Kind, replica: Int = 1, argv: [String], environment: [String: String] = [:],
                    port: Int, opsPort: Int? = nil, health: String?) {
            self.opsPort = opsPort ?? port
            self.name = name
            self.role = role
            self.kind = kind
            self.replica = replica
            self.argv = argv
            self.environment = environment
            self.port = port
            self.health = health
        }
    }

    /// Every worker role, in the order a fleet starts them.
    public static let workerRoles = ["catalog", "inventory", "orders", "payments", "notifications", "search", "identity", "cart", "deadletters"]

    /// Settings every process gets (URLs, keys, the topology file).
    public var environment: [String: String]
    public var processes: [Process]

    public init(environment: [String: String], processes: [Process]) {
        self.environment = environment
        self.processes = processes
    }

    /// Where the processes listen. Worker replicas take consecutive ports from `firstWorker`; edge
    /// replicas from `edge`, their ops ports from `edgeOps`.
    public struct Ports: Sendable, Equatable {
        public var firstWorker: Int
        public var edge: Int
        public var edgeOps: Int
        public var paymentsSandbox: Int
        public var smtpSink: Int

        public init(firstWorker: Int, edge: Int, edgeOps: Int, paymentsSandbox: Int, smtpSink: Int) {
            self.firstWorker = firstWorker
            self.edge = edge
            self.edgeOps = edgeOps
            self.paymentsSandbox = paymentsSandbox
            self.smtpSink = smtpSink
        }

        /// A block of consecutive ports from `first`: sandbox, sink, the edges, the edges' ops ports, then the workers.
        public static func block(from first: Int, edges: Int) -> Ports {
            Ports(firstWorker: first + 2 + 2 * edges, edge: first + 2, edgeOps: first + 2 + edges, paymentsSandbox: first, smtpSink: first + 1)
        }

        /// How many ports ``block(from:edges:)`` takes for a fleet with these replica counts.
        public static func blockSize(workers: Int, edges: Int) -> Int { 2 + 2 * edges + workers }
    }

    /// What the mail sink does with what it receives.
    public enum Mail: Sendable, Equatable {
        /// Keeps every message in a Maildir (`<folder>/new`), where tests and the chaos runner count them.
        case maildir(String)
        /// Accepts and forgets (benchmarks).
        case discard
        /// No sink: the fleet mails a real server (`SHOPFLEET_SMTP_URL`).
        case none
    }

    /// The whole shop on this machine: every worker role (or `workers`), the edge, the payments
    /// sandbox and the SMTP sink, each role with `replicas[role]` processes (1 where not said).
    ///
    /// - Parameters:
    ///   - binary: the `shopfleet` executable every Shopfleet process runs.
    ///   - python: the Python with `aiosmtpd`, for the mail sink (`SHOPFLEET_PYTHON`).
    ///   - environment: the settings every process shares. The sandbox and sink addresses are set
    ///     here from `ports` (`SHOPFLEET_PAYMENTS_URL`, `SHOPFLEET_SMTP_URL`) unless `sandbox` or
    ///     the sink is left out.
    public static func shop(binary: String, python: String?, environment: [String: String], ports: Ports,
                            replicas: [String: Int] = [:], workers: [String] = workerRoles, edge: Bool = true,
                            sandbox: Bool = true, mail: Mail = .discard) -> FleetPlan {
        var shared = environment
        var processes: [Process] = []
        shared["SHOPFLEET_ENV_FILE"] = "/dev/null"  // not the operator's local fleet file, which holds every secret
        func count(_ role: String) -> Int { max(1, replicas[role] ?? 1) }
        func name(_ role: String, _ replica: Int) -> String { count(role) > 1 ? "\(role)-\(replica)" : role }

        if case .none = mail {} else if let python {
            var argv = [python, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(ports.smtpSink)"]
            if case .maildir(let folder) = mail { argv += ["-c", "aiosmtpd.handlers.Mailbox", folder] } else { argv += ["-c", "aiosmtpd.handlers.Sink"] }
            processes.append(Process(name: "smtp-sink", role: "smtp-sink", kind: .smtpSink, argv: argv, port: ports.smtpSink, health: nil))
            shared["SHOPFLEET_SMTP_URL"] = "smtp://127.0.0.1:\(ports.smtpSink)"
        }
        if sandbox {
            processes.append(Process(name: "payments-sandbox", role: "payments-sandbox", kind: .paymentsSandbox,
                                     argv: [binary, "payments-sandbox", "--port", String(ports.paymentsSandbox)],
                                     port: ports.paymentsSandbox, health: "http://127.0.0.1:\(ports.paymentsSandbox)/healthz"))
            shared["SHOPFLEET_PAYMENTS_URL"] = "http://127.0.0.1:\(ports.paymentsSandbox)"
        }
        var port = ports.firstWorker
        for role in workers {
            for replica in 1...count(role) {
                processes.append(Process(name: name(role, replica), role: role, kind: .worker, replica: replica,
                                         argv: [binary, "worker", role, "--port", String(port)],
                                         port: port, health: "http://127.0.0.1:\(port)/readyz"))
                port += 1
            }
        }
        if edge {
            for replica in 1...count("edge") {
                let edgePort = ports.edge + replica - 1, opsPort = ports.edgeOps + replica - 1
                processes.append(Process(name: name("edge", replica), role: "edge", kind: .edge, replica: replica,
                                         argv: [binary, "edge", "--port", String(edgePort), "--ops-port", String(opsPort)],
                                         port: edgePort, opsPort: opsPort, health: "http://127.0.0.1:\(opsPort)/readyz"))
            }
        }
        // Each process gets the secrets and server URLs of its role only; under per-service
        // identities, its own user on the broker and its own role on the database.
        for index in processes.indices {
            processes[index].environment.merge(share(of: processes[index].role, from: shared)) { _, own in own }
        }
        for key in withheld { shared[key] = nil }
        return FleetPlan(environment: shared, processes: processes)
    }

    /// What of `environment` (the operator's settings) a process of `role` holds: the guarded
    /// settings its role gets, and under per-service identities (`SHOPFLEET_FLEET_SECRET` in
    /// `environment`) its own broker user and database role in the URLs.
    public static func share(of role: String, from environment: [String: String]) -> [String: String] {
        let identities = environment[FleetIdentities.secretKey].flatMap { try? FleetIdentities(secret: $0) }
        var own: [String: String] = [:]
        for (key, roles) in holders where roles.contains(role) {
            guard var value = environment[key] else { continue }
            if let identities, key == "SHOPFLEET_AMQP_URL" { value = identities.amqpURL(value, service: role) }
            if let identities, key == "SHOPFLEET_DATABASE_URL" { value = identities.databaseURL(value, service: role) }
            own[key] = value
        }
        // The console's fleet view: the management API's address, never the operator's
        // credentials (the edge signs in as its own broker user).
        if role == "edge", (environment["SHOPFLEET_EDGE_MANAGEMENT_URL"] ?? "").isEmpty, let management = environment["SHOPFLEET_AMQP_MANAGEMENT_URL"] {
            own["SHOPFLEET_EDGE_MANAGEMENT_URL"] = FleetIdentities.withoutUserInfo(management)
        }
        return own
    }

    /// The settings that open a server or hold a secret, and the roles that get them: a process of
    /// any other role has none of them, not even inherited from whoever started the fleet.
    public static let holders: [String: Set<String>] = [
        "SHOPFLEET_AMQP_URL": Set(workerRoles + ["edge"]),
        "SHOPFLEET_DATABASE_URL": Set(workerRoles),
        "SHOPFLEET_REDIS_URL": ["cart", "edge"],
        "SHOPFLEET_PAYMENTS_API_KEY": ["payments", "payments-sandbox"],
        "SHOPFLEET_SMTP_URL": ["notifications"],
        "SHOPFLEET_WEBHOOK_SECRET": ["notifications"],
        "SHOPFLEET_JWT_SIGNING_KEY": ["identity"],
        "SHOPFLEET_JWT_PUBLIC_KEYS": ["edge"],
        "SHOPFLEET_AMQP_MANAGEMENT_URL": [],
        FleetIdentities.secretKey: [],
    ]

    /// Every variable a fleet process never inherits (the ones above, and their `_FILE` forms).
    public static let withheld: Set<String> = Set(holders.keys.flatMap { [$0, $0 + "_FILE"] })

    /// The process named `name`.
    public func process(_ name: String) -> Process? { processes.first { $0.name == name } }

    /// Every replica of `role`.
    public func replicas(of role: String) -> [Process] { processes.filter { $0.role == role } }

    /// The environment `process` runs with: the shared settings, then its own.
    public func environment(of process: Process) -> [String: String] {
        environment.merging(process.environment) { _, own in own }
    }

    /// Replica counts from `--replicas 2` or `--replicas 2,orders=3,edge=1`: a number for every
    /// role, then `role=count` for some; an error that says what is wrong.
    public static func replicas(parsing text: String) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: " ") }) where !part.isEmpty {
            if let equals = part.firstIndex(of: "=") {
                let role = String(part[..<equals])
                guard workerRoles.contains(role) || role == "edge" else {
                    throw PlanError("--replicas: unknown role '\(role)'; the roles are \((workerRoles + ["edge"]).joined(separator: ", "))")
                }
                guard let n = Int(part[part.index(after: equals)...]), (1...16).contains(n) else {
                    throw PlanError("--replicas: '\(part)' needs a count from 1 to 16")
                }
                counts[role] = n
            } else {
                guard let n = Int(part), (1...16).contains(n) else {
                    throw PlanError("--replicas: '\(part)' is neither a count from 1 to 16 nor role=count")
                }
                for role in workerRoles + ["edge"] where counts[role] == nil { counts[role] = n }
            }
        }
        return counts
    }
}

/// A plan that cannot be made, and why.
public struct PlanError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text.removeFirst() }
        while let last = text.last, set.contains(last) { text.removeLast() }
        return String(text)
    }
}
