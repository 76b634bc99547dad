import Fleet
import Testing

/// The fleet plan and the restart decision, without starting anything.
@Suite("Fleet plan and restart policy")
struct FleetPlanTests {
    let ports = FleetPlan.Ports.block(from: 20_000, edges: 2)

    @Test func everyReplicaIsAProcessOfItsOwnWithItsOwnPort() throws {
        let plan = FleetPlan.shop(binary: "/bin/shopfleet", python: "/bin/python", environment: ["SHOPFLEET_LOG_LEVEL": "info"],
                                  ports: ports, replicas: try FleetPlan.replicas(parsing: "2,deadletters=1"), mail: .maildir("/tmp/mail"))
        let workers = plan.processes.filter { $0.kind == .worker }
        #expect(workers.count == 17)  // nine roles, two of each but deadletters
        #expect(plan.replicas(of: "orders").map(\.name) == ["orders-1", "orders-2"])
        #expect(plan.replicas(of: "deadletters").map(\.name) == ["deadletters"])
        #expect(plan.replicas(of: "edge").map(\.port) == [20_002, 20_003])
        // The edge's /healthz, /readyz and /metrics are on a port of their own.
        #expect(plan.replicas(of: "edge").map(\.opsPort) == [20_004, 20_005])
        #expect(plan.process("edge-1")?.health == "http://127.0.0.1:20004/readyz")
        let allPorts = plan.processes.map(\.port) + plan.replicas(of: "edge").map(\.opsPort)
        #expect(Set(allPorts).count == allPorts.count, "two processes share a port")
        #expect(plan.process("orders-2")?.argv == ["/bin/shopfleet", "worker", "orders", "--port", String(plan.process("orders-2")!.port)])
        #expect(plan.process("orders-2")?.health == "http://127.0.0.1:\(plan.process("orders-2")!.port)/readyz")
        // The fleet reaches the sandbox and the sink it runs.
        #expect(plan.environment["SHOPFLEET_PAYMENTS_URL"] == "http://127.0.0.1:20000")
        #expect(plan.environment(of: plan.process("notifications-1")!)["SHOPFLEET_SMTP_URL"] == "smtp://127.0.0.1:20001")
        #expect(plan.process("smtp-sink")?.argv.suffix(3) == ["-c", "aiosmtpd.handlers.Mailbox", "/tmp/mail"])
        #expect(plan.environment(of: plan.process("orders-1")!)["SHOPFLEET_LOG_LEVEL"] == "info")
    }

    /// Each process is given the secrets and server URLs of its role only, under its own broker
    /// user and database role; nothing secret is shared, and none of it is inherited.
    @Test func eachProcessGetsItsOwnIdentityAndOnlyItsOwnSecrets() throws {
        let secret = String(repeating: "s", count: 40)
        let environment = [
            "SHOPFLEET_AMQP_URL": "amqp://operator:op-pw@127.0.0.1:5672/shop", "SHOPFLEET_DATABASE_URL": "postgres://migrator:db-pw@127.0.0.1:5432/shopfleet",
            "SHOPFLEET_REDIS_URL": "redis://:redis-pw@127.0.0.1:6379/0", "SHOPFLEET_PAYMENTS_API_KEY": "sk_test_key",
            "SHOPFLEET_JWT_SIGNING_KEY": "k1:signing", "SHOPFLEET_JWT_PUBLIC_KEYS": "k1:public", "SHOPFLEET_WEBHOOK_SECRET": "hook",
            "SHOPFLEET_AMQP_MANAGEMENT_URL": "http://operator:op-pw@127.0.0.1:15672", "SHOPFLEET_FLEET_SECRET": secret, "SHOPFLEET_LOG_LEVEL": "info",
        ]
        let plan = FleetPlan.shop(binary: "/bin/shopfleet", python: "/bin/python", environment: environment, ports: ports, mail: .maildir("/tmp/m"))
        let identities = try FleetIdentities(secret: secret)
        for key in FleetPlan.holders.keys { #expect(plan.environment[key] == nil, "\(key) is shared by every process") }
        #expect(plan.environment["SHOPFLEET_ENV_FILE"] == "/dev/null", "fleet processes would read the operator's local file")
        #expect(plan.environment["SHOPFLEET_LOG_LEVEL"] == "info")
        func env(_ name: String) -> [String: String] { plan.environment(of: plan.process(name)!) }
        #expect(env("orders")["SHOPFLEET_AMQP_URL"] == "amqp://shopfleet-orders:\(identities.brokerPassword("orders"))@127.0.0.1:5672/shop")
        #expect(env("orders")["SHOPFLEET_DATABASE_URL"] == "postgres://shopfleet_orders:\(identities.databasePassword("orders"))@127.0.0.1:5432/shopfleet")
        #expect(env("orders")["SHOPFLEET_REDIS_URL"] == nil && env("orders")["SHOPFLEET_PAYMENTS_API_KEY"] == nil)
        #expect(env("edge")["SHOPFLEET_DATABASE_URL"] == nil, "the edge has database credentials")
        #expect(env("edge")["SHOPFLEET_JWT_SIGNING_KEY"] == nil && env("edge")["SHOPFLEET_JWT_PUBLIC_KEYS"] == "k1:public")
        #expect(env("edge")["SHOPFLEET_AMQP_URL"]?.hasPrefix("amqp://shopfleet-edge:") == true)
        #expect(env("identity")["SHOPFLEET_JWT_SIGNING_KEY"] == "k1:signing")
        #expect(env("payments")["SHOPFLEET_PAYMENTS_API_KEY"] == "sk_test_key" && env("payments-sandbox")["SHOPFLEET_PAYMENTS_API_KEY"] == "sk_test_key")
        #expect(env("payments-sandbox")["SHOPFLEET_AMQP_URL"] == nil)
        #expect(env("notifications")["SHOPFLEET_WEBHOOK_SECRET"] == "hook" && env("cart")["SHOPFLEET_WEBHOOK_SECRET"] == nil)
        #expect(env("cart")["SHOPFLEET_REDIS_URL"] != nil && env("edge")["SHOPFLEET_REDIS_URL"] != nil)
        for process in plan.processes {
            let own = env(process.name)
            #expect(own["SHOPFLEET_FLEET_SECRET"] == nil && own["SHOPFLEET_AMQP_MANAGEMENT_URL"] == nil, "\(process.name) holds an operator secret")
            #expect(!own.values.contains { $0.contains("op-pw") || $0.contains("db-pw") }, "\(process.name) holds the operator's password")
        }
        // And none of them inherits what the supervisor's own environment holds.
        #expect(FleetPlan.withheld.isSuperset(of: ["SHOPFLEET_JWT_SIGNING_KEY", "SHOPFLEET_JWT_SIGNING_KEY_FILE", "SHOPFLEET_DATABASE_URL", "SHOPFLEET_FLEET_SECRET"]))
    }

    @Test func replicaCountsAreReadOrRefusedWithAReason() throws {
        #expect(try FleetPlan.replicas(parsing: "orders=3, 2")["orders"] == 3)
        #expect(try FleetPlan.replicas(parsing: "orders=3, 2")["cart"] == 2)
        #expect(try FleetPlan.replicas(parsing: "edge=2")["orders"] == nil)
        #expect(throws: PlanError.self) { try FleetPlan.replicas(parsing: "ordres=2") }
        #expect(throws: PlanError.self) { try FleetPlan.replicas(parsing: "0") }
        #expect(throws: PlanError.self) { try FleetPlan.replicas(parsing: "orders=many") }
    }

    /// A process killed by someone else comes back at once however often it happens; one that
    /// keeps crashing by itself waits longer each time, up to a bound.
    @Test func aKilledProcessIsNotACrashLoop() {
        var policy = RestartPolicy()
        for _ in 0..<10 {
            #expect(policy.delay(afterExit: 128 + 9, ranFor: .seconds(1)) == .milliseconds(250))
        }
        #expect(policy.delay(afterExit: 128 + 15, ranFor: .milliseconds(100)) == .milliseconds(250))
        #expect(policy.crashes == 0)
    }

    @Test func aCrashLoopBacksOffToABoundAndAStableRunResetsIt() {
        var policy = RestartPolicy()
        let delays = (0..<6).map { _ in policy.delay(afterExit: 1, ranFor: .seconds(1)) }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
        // A crash signal is a crash, not a kill.
        #expect(policy.delay(afterExit: 128 + 11, ranFor: .seconds(1)) == .seconds(5))
        // Ran long enough before ending: a fresh start.
        #expect(policy.delay(afterExit: 1, ranFor: .seconds(30)) == .milliseconds(500))
        #expect(RestartPolicy.describe(137) == "killed by SIGKILL")
        #expect(RestartPolicy.describe(3) == "exited with status 3")
    }
}
