import ClientRuntime
import FoundationEssentials
import ShopfleetTesting
import Testing

/// `shopfleet chaos run --scenario ci` on every CI run: 200 orders through the edge, two replicas
/// of every process, a kill every 1–2 s for 30 s, a RabbitMQ restart, a PostgreSQL restart and a
/// failing gateway, against the test servers (which it stops and starts). It must pass every
/// time: a flaky run is a bug to find.
@Suite("Chaos: the CI scenario", .serialized)
struct ChaosRunTests {
    struct Report: Decodable {
        struct Orders: Decodable { var tried: Int; var accepted: Int; var completed: Int; var refused: Int }
        struct Fault: Decodable { var kind: String; var summary: String; var error: String? }
        struct Violation: Decodable { var check: String; var subject: String; var detail: String }
        var orders: Orders
        var faults: [Fault]
        var restarts: Int
        var violations: [Violation]
        var recovery: Double
    }

    static var binary: String {
        let exe = ChildProcess.currentExecutable ?? ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.startIndex)]) + "/shopfleet"
    }

    @Test func theCIScenarioKeepsTheLedger() async throws {
        let folder = "/tmp/" + TestServers.uniqueName("chaos-test")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let result = try await ChildProcess.run(
            [Self.binary, "chaos", "run", "--scenario", "ci", "--report", "\(folder)/report.json", "--plot", "\(folder)/run.png",
             "--directory", folder],
            extraEnvironment: ["SHOPFLEET_TOPOLOGY_FILE": BrokerSandbox.fleetTopologyFile,
                               "SHOPFLEET_OPENAPI_FILE": TestServers.repositoryRoot + "/openapi.yaml"])
        // However it went, the servers must be up for the tests after this one.
        try await TestServers.control("up")
        #expect(result.status == 0, "\(result.output)")
        let report = try JSONDecoder().decode(Report.self, from: try #require(FileManager.default.contents(atPath: "\(folder)/report.json")))
        #expect(report.violations.isEmpty, "\(report.violations.prefix(20).map { "\($0.check): \($0.subject): \($0.detail)" })")
        #expect(report.orders.tried == 200 && report.orders.accepted == 200 && report.orders.refused == 0)
        #expect(report.orders.completed > 100)
        // The faults it promised happened, and the supervisor brought every killed process back.
        let kills = report.faults.filter { $0.kind == "kill" }.count
        #expect(kills >= 14)
        #expect(report.faults.contains { $0.kind == "rabbitmq" && $0.error == nil })
        #expect(report.faults.contains { $0.kind == "postgres" && $0.error == nil })
        #expect(report.faults.allSatisfy { $0.error == nil }, "\(report.faults.filter { $0.error != nil })")
        #expect(report.restarts >= kills)
        #expect(report.recovery <= 60)
        let plot = try #require(FileManager.default.contents(atPath: "\(folder)/run.png"))
        #expect(plot.starts(with: [0x89, 0x50, 0x4E, 0x47]))  // a PNG
        #expect(result.output.contains("PASSED"))
    }
}
