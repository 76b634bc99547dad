import ClientRuntime
import FoundationEssentials
import NIOHTTP1
import ShopfleetTesting
import Testing

/// schemathesis (PyPI) against `openapi.yaml` and the running edge: generated requests, valid and
/// not, must never get a 5xx, and every answer must match the document.
@Suite("API fuzzing", .serialized)
struct FuzzTests {
    @Test func schemathesisFindsNoServerErrorAndNoAnswerOutsideTheDocument() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_EDGE_RATE_LIMIT": "100000"]) { fleet in
            let mug = CheckoutFleet.product("MUG-FUZZ", price: 1250)
            try await fleet.seed([.init(product: mug, stock: 50)])
            let edge = EdgeTests()
            let email = "fuzz-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await edge.call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "correct horse", "name": "Fuzz"}"#)
            let login = try await edge.call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "correct horse"}"#)
            let token = try #require(edge.string(login.body["accessToken"]))
            let result = try await ChildProcess.run([
                schemathesis(), "run", TestServers.repositoryRoot + "/openapi.yaml",
                "--url", "http://127.0.0.1:\(fleet.ports["edge"]!)",
                "-H", "Authorization: Bearer \(token)",
                "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--max-examples", "25", "--seed", "20261125", "--workers", "2", "--request-timeout", "10",
            ], extraEnvironment: ["NO_COLOR": "1"])
            if result.status != 0 { print(result.output) }
            #expect(result.status == 0, "schemathesis found problems (its report is above)")
        }
    }

    /// The schemathesis command beside the tools' Python (scripts/servers.sh installs both).
    func schemathesis() throws -> String {
        let python = try TestServers.environment("SHOPFLEET_PYTHON")
        return String(python[..<python.lastIndex(of: "/")!]) + "/schemathesis"
    }
}
