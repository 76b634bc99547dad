import ClientRuntime
import FoundationEssentials
@testable import Messaging
import ShopfleetTesting

/// A virtual host of its own for one test, with a topology applied: tests never see each other's
/// queues. Deleted (with everything in it) by `remove()`.
struct BrokerSandbox {
    let vhost: String
    let management: RabbitManagement
    let amqpURL: String
    let topology: Topology

    static let fixtureFile: String = {
        let here = #filePath
        let directory = here[..<here.lastIndex(of: "/")!]
        return "\(directory)/Fixtures/topology.yaml"
    }()

    static var repositoryRoot: String { TestServers.repositoryRoot }

    static func create(topologyFile: String = fixtureFile, apply: Bool = true) async throws -> BrokerSandbox {
        let management = try RabbitManagement(url: try TestServers.managementURL())
        let vhost = TestServers.uniqueName("shopfleet-test")
        let base = try TestServers.amqpURL()
        let topology = try Topology(contentsOfFile: topologyFile)
        try await management.createVirtualHost(vhost, for: try ServerURL(base, schemes: ["amqp"]).user ?? "guest",
                                               loading: apply ? topology.render() : nil)
        let amqpURL = RabbitManagement.amqpURL(base, virtualHost: vhost)
        return BrokerSandbox(vhost: vhost, management: management, amqpURL: amqpURL, topology: topology)
    }

    func remove() async {
        try? await management.deleteVirtualHost(vhost)
    }
}
