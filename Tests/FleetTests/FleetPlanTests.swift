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
        let allPorts = plan.processes.map(\.port)
        #expect(Set(allPorts).count == allPorts.count, "two processes share a port")
        #expect(plan.process("orders-2")?.argv == ["/bin/shopfleet", "worker", "orders", "--port", String(plan.process("orders-2")!.port)])
        #expect(plan.process("orders-2")?.health == "http://127.0.0.1:\(plan.process("orders-2")!.port)/readyz")
        // The fleet reaches the sandbox and the sink it runs.
        #expect(plan.environment["SHOPFLEET_PAYMENTS_URL"] == "http://127.0.0.1:20000")
        #expect(plan.environment["SHOPFLEET_SMTP_URL"] == "smtp://127.0.0.1:20001")
        #expect(plan.process("smtp-sink")?.argv.suffix(3) == ["-c", "aiosmtpd.handlers.Mailbox", "/tmp/mail"])
        #expect(plan.environment(of: plan.process("orders-1")!)["SHOPFLEET_LOG_LEVEL"] == "info")
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
