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

    static var repositoryRoot: String {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }

    static func create(topologyFile: String = fixtureFile, apply: Bool = true) async throws -> BrokerSandbox {
        let management = try RabbitManagement(url: try TestServers.managementURL())
        let vhost = TestServers.uniqueName("shopfleet-test")
        let base = try ServerURL(try TestServers.amqpURL(), schemes: ["amqp"])
        try await management.createVirtualHost(vhost)
        try await management.grantAll(user: base.user ?? "guest", vhost: vhost)
        let topology = try Topology(contentsOfFile: topologyFile)
        if apply { try await management.load(topology.render(), vhost: vhost) }
        let credentials = base.user.map { user in base.password.map { "\(user):\($0)@" } ?? "\(user)@" } ?? ""
        let amqpURL = "amqp://\(credentials)\(base.host):\(base.port ?? 5672)/\(RabbitManagement.encodeVHost(vhost))"
        return BrokerSandbox(vhost: vhost, management: management, amqpURL: amqpURL, topology: topology)
    }

    func remove() async {
        try? await management.deleteVirtualHost(vhost)
    }
}
