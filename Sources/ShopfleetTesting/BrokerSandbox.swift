public import ClientRuntime
public import Messaging
public import RabbitManagement

/// A virtual host of its own for one test, with a topology applied: tests never see each other's
/// queues. Deleted (with everything in it) by `remove()`.
public struct BrokerSandbox: Sendable {
    public let vhost: String
    public let management: RabbitManagement
    public let amqpURL: String
    public let topology: Topology

    /// The fleet's own topology, `topology/shopfleet.yaml`.
    public static var fleetTopologyFile: String { TestServers.repositoryRoot + "/topology/shopfleet.yaml" }

    public static func create(topologyFile: String, apply: Bool = true) async throws -> BrokerSandbox {
        let management = try RabbitManagement(url: try TestServers.managementURL())
        let vhost = TestServers.uniqueName("shopfleet-test")
        let base = try TestServers.amqpURL()
        let topology = try Topology(contentsOfFile: topologyFile)
        try await management.createVirtualHost(vhost, for: try ServerURL(base, schemes: ["amqp"]).user ?? "guest",
                                               loading: apply ? topology.render() : nil)
        let amqpURL = RabbitManagement.amqpURL(base, virtualHost: vhost)
        return BrokerSandbox(vhost: vhost, management: management, amqpURL: amqpURL, topology: topology)
    }

    public func remove() async {
        try? await management.deleteVirtualHost(vhost)
    }
}
