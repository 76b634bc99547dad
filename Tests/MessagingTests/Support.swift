import ClientRuntime
import FoundationEssentials
@testable import Messaging
import ShopfleetTesting

extension BrokerSandbox {
    static let fixtureFile: String = {
        let here = #filePath
        let directory = here[..<here.lastIndex(of: "/")!]
        return "\(directory)/Fixtures/topology.yaml"
    }()

    static var repositoryRoot: String { TestServers.repositoryRoot }

    static func create(apply: Bool = true) async throws -> BrokerSandbox {
        try await create(topologyFile: fixtureFile, apply: apply)
    }
}
