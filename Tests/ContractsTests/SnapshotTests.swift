import Contracts
import FoundationEssentials
import Messaging
import ShopfleetTesting
import Testing

@Suite("Contract snapshot")
struct SnapshotTests {
    static let file = TestServers.repositoryRoot + "/contracts/snapshot.json"

    @Test func everyContractMatchesTheCheckedInSnapshot() throws {
        let data = try #require(FileManager.default.contents(atPath: Self.file), "contracts/snapshot.json is missing")
        let problems = try ContractSnapshot.decode(data).problems(with: try ContractSnapshot(ContractCatalog.all))
        #expect(problems == [])
    }

    @Test func typeNamesFollowTheConvention() {
        for contract in ContractCatalog.all {
            let parts = contract.type.split(separator: ".")
            #expect(parts.count == 3 && parts[2].hasPrefix("v") && Int(parts[2].dropFirst()) != nil, "\(contract.type) is not <domain>.<Name>.v<N>")
        }
    }
}
