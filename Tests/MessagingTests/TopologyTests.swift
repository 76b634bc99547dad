import ClientRuntime
import FoundationEssentials
@testable import Messaging
import RabbitManagement
import ShopfleetTesting
import Testing

@Suite("Topology as code")
struct TopologyTests {
    static let authored = BrokerSandbox.repositoryRoot + "/topology/shopfleet.yaml"
    static let rendered = BrokerSandbox.repositoryRoot + "/topology/definitions.json"

    @Test func checkedInDefinitionsMatchTheAuthoredFile() throws {
        let json = try Topology(contentsOfFile: Self.authored).render().json()
        let onDisk = FileManager.default.contents(atPath: Self.rendered).map { String(decoding: $0, as: UTF8.self) }
        #expect(onDisk == json, "topology/definitions.json is out of date: run `shopfleet topology render`")
    }

    /// Rendered by two other processes (the `shopfleet` CLI, each with its own random hashing
    /// seed, so any order taken from a dictionary would differ) and by this one: the same bytes.
    @Test func renderingIsDeterministic() async throws {
        let exe = ChildProcess.currentExecutable ?? ""
        let cli = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/shopfleet"
        let here = try Topology(contentsOfFile: Self.authored).render().json()
        for _ in 0..<2 {
            let permissions = "/tmp/\(TestServers.uniqueName("permissions")).json"
            defer { try? FileManager.default.removeItem(atPath: permissions) }
            let rendered = try await ChildProcess.check([cli, "topology", "render", "--file", Self.authored, "--output", "-",
                                                         "--permissions", permissions],
                                                        extraEnvironment: ["SWIFT_DETERMINISTIC_HASHING": ""])
            #expect(rendered == here)
        }
    }

    @Test func queuesCarryOnlyTheirTypeAndPoliciesCarryTheRest() throws {
        let definitions = try Topology(contentsOfFile: Self.authored).render()
        let transient: Set<String> = ["catalog.queries", "inventory.queries", "orders.queries", "search.queries", "deadletters.queries"]
        #expect(definitions.queues.allSatisfy { queue in
            queue.arguments == ["x-queue-type": .string(transient.contains(queue.name) ? "classic" : "quorum")] && queue.durable
        })
        let query = try #require(definitions.policies.first { $0.name == "shopfleet:catalog.queries" })
        #expect(query.definition == ["message-ttl": .int(60_000), "overflow": .string("reject-publish"), "max-length": .int(100_000)])
        let orders = try #require(definitions.policies.first { $0.name == "shopfleet:orders.commands" })
        #expect(orders.pattern == #"^orders\.commands$"#)
        #expect(orders.definition["delivery-limit"] == .int(10))
        #expect(orders.definition["dead-letter-exchange"] == .string("shopfleet.dead-letters"))
        #expect(orders.definition["dead-letter-strategy"] == .string("at-least-once"))
        #expect(orders.definition["overflow"] == .string("reject-publish"))
        // The dead-letter queue's own limit parks what the store cannot take in a queue nobody consumes.
        let letters = try #require(definitions.policies.first { $0.name == "shopfleet:shopfleet.dead-letters" })
        #expect(letters.definition["delivery-limit"] == .int(10))
        #expect(letters.definition["dead-letter-exchange"] == .string("shopfleet.dead-letters.unstored"))
        #expect(definitions.bindings.contains { $0.source == "shopfleet.dead-letters.unstored" && $0.destination == "shopfleet.dead-letters.unstored" })
        #expect(definitions.policies.allSatisfy { $0.name != "shopfleet:shopfleet.dead-letters.unstored" })
        let tier = try #require(definitions.policies.first { $0.name == "shopfleet:shopfleet.retry.5s" })
        #expect(tier.definition["message-ttl"] == .int(5000))
        #expect(tier.definition["dead-letter-exchange"] == .string("shopfleet.retry-return"))
        // Each consuming queue can be reached from the retry-return exchange by its own name.
        #expect(definitions.bindings.contains { $0.source == "shopfleet.retry-return" && $0.destination == "orders.commands" && $0.routing_key == "orders.commands" })
        #expect(!definitions.bindings.contains { $0.source == "shopfleet.retry-return" && $0.destination == "orders.queries" })
        #expect(definitions.bindings.contains { $0.source == "orders.events" && $0.destination == "notifications.order-events" && $0.routing_key == "orders.OrderConfirmed.*" })
    }

    @Test func badFilesAreRejectedWithTheReason() {
        let base = """
            dead_letters: {exchange: dlx, queue: dlq}
            retry: {exchange_prefix: r, return_exchange: rr, tiers: [1s, 5s]}
            topics: [a.events]
            """
        func error(_ yaml: String) -> String {
            do { _ = try Topology(yaml: yaml, source: "t.yaml"); return "no error" } catch { return "\(error)" }
        }
        #expect(error(base + "\nqueues:\n  - name: q\n    subscriptions: [{topic: nope.events}]").contains("subscribes to 'nope.events', which is not a topic"))
        #expect(error(base + "\nqueues:\n  - name: q\n  - name: q").contains("queue 'q' is declared twice"))
        #expect(error(base.replacing("[1s, 5s]", with: "[5s, 1s]") + "\nqueues: []").contains("retry tiers must grow"))
        #expect(error(base.replacing("[1s, 5s]", with: "[soon]") + "\nqueues: []").contains("'soon' is not a duration"))
        #expect(error("queues: []").contains("missing 'dead_letters'"))
        #expect(error(base + "\nqueues:\n  - name: q\n    delivery_limit: 0").contains("delivery_limit must be at least 1"))
    }

    @Test func applyThenDiffIsEmptyAndDiffReportsADeletedQueue() async throws {
        let sandbox = try await BrokerSandbox.create(topologyFile: Self.authored, apply: false)
        defer { Task { await sandbox.remove() } }
        let want = sandbox.topology.render()
        let before = TopologyDiff(want: want, have: try await sandbox.management.definitions(vhost: sandbox.vhost))
        #expect(before.differences.contains(.missingQueue("orders.commands")))

        try await sandbox.management.load(want, vhost: sandbox.vhost)
        let after = TopologyDiff(want: want, have: try await sandbox.management.definitions(vhost: sandbox.vhost))
        #expect(after.differences == [])

        try await sandbox.management.deleteQueue("payments.commands", vhost: sandbox.vhost)
        let deleted = TopologyDiff(want: want, have: try await sandbox.management.definitions(vhost: sandbox.vhost))
        #expect(deleted.differences.contains(.missingQueue("payments.commands")))
        // Its bindings went with it.
        #expect(deleted.differences.contains(.missingBinding("shopfleet.retry-return → queue payments.commands (routing key 'payments.commands')")))
    }

    /// The CLI as an operator or a deploy job runs it: `diff` exits 1 and names what is missing,
    /// `apply` loads it and exits 0, `diff` is then quiet with 0; a file it cannot read is an
    /// error that says why. The management URL (with its password) comes by environment.
    @Test func theCLIsApplyAndDiffExitCodes() async throws {
        let sandbox = try await BrokerSandbox.create(topologyFile: Self.authored, apply: false)
        defer { Task { await sandbox.remove() } }
        let exe = ChildProcess.currentExecutable ?? ""
        let cli = String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/shopfleet"
        // No fleet secret: no service users are made on the shared test broker.
        let environment = ["SHOPFLEET_AMQP_MANAGEMENT_URL": try TestServers.managementURL(), "SHOPFLEET_FLEET_SECRET": ""]
        func run(_ arguments: [String]) async throws -> ChildProcess.Result {
            try await ChildProcess.run([cli, "topology"] + arguments + ["--file", Self.authored, "--vhost", sandbox.vhost],
                                       extraEnvironment: environment)
        }
        let before = try await run(["diff"])
        #expect(before.status == 1)
        #expect(before.output.contains("missing queue 'orders.commands'"), "\(before.output.prefix(500))")
        let applied = try await run(["apply"])
        #expect(applied.status == 0, "\(applied.output.suffix(500))")
        #expect(applied.output.contains("applied") && applied.output.contains("to vhost '\(sandbox.vhost)'"))
        let after = try await run(["diff"])
        #expect(after.status == 0 && after.output.isEmpty, "\(after.output.prefix(500))")
        try await sandbox.management.deleteQueue("payments.commands", vhost: sandbox.vhost)
        let deleted = try await run(["diff"])
        #expect(deleted.status == 1 && deleted.output.contains("missing queue 'payments.commands'"))
        let missingFile = try await ChildProcess.run([cli, "topology", "diff", "--file", "/nonexistent/topology.yaml"], extraEnvironment: environment)
        #expect(missingFile.status != 0 && missingFile.status != 1)
    }

    @Test func diffReportsAChangedPolicy() async throws {
        let sandbox = try await BrokerSandbox.create()
        defer { Task { await sandbox.remove() } }
        var changed = sandbox.topology
        changed.queues[0].deliveryLimit = 9
        let diff = TopologyDiff(want: changed.render(), have: try await sandbox.management.definitions(vhost: sandbox.vhost))
        #expect(diff.differences == [.policyDiffers("shopfleet:fixture.commands", "definition delivery-limit is 3, want 9")])
    }

    @Test func aNarrowedSubscriptionLeavesABindingThatApplyRemoves() async throws {
        let sandbox = try await BrokerSandbox.create(topologyFile: Self.authored)
        defer { Task { await sandbox.remove() } }
        // The live broker has the file's bindings; narrow one queue's filter in the file.
        var narrowed = sandbox.topology
        let index = try #require(narrowed.queues.firstIndex { !$0.subscriptions.isEmpty })
        let old = narrowed.queues[index].subscriptions[0]
        narrowed.queues[index].subscriptions[0].filter = ["\(old.topic.split(separator: ".")[0]).Narrowed.*"]
        let want = narrowed.render()
        let stale = TopologyDiff(want: want, have: try await sandbox.management.definitions(vhost: sandbox.vhost))
        #expect(stale.differences.contains { if case .extraBinding(let binding) = $0 { return binding.routing_key == old.filter[0] }; return false })

        let after = try await sandbox.management.apply(want, vhost: sandbox.vhost)
        #expect(after.differences == [])
    }
}
