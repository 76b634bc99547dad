import PostgresClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The test server's URL, from `make test` (scripts/servers.sh env test).
func databaseURL() throws -> String {
    guard let url = getenv("SHOPFLEET_DATABASE_URL").map({ String(cString: $0) }) else {
        throw TestEnvironmentMissing(variable: "SHOPFLEET_DATABASE_URL")
    }
    return url
}

struct TestEnvironmentMissing: Error, CustomStringConvertible {
    var variable: String
    var description: String { "\(variable) is not set: run the tests with `make test`, which starts the servers" }
}

func testConfiguration() throws -> PostgresConfiguration {
    try PostgresConfiguration(url: databaseURL())
}

/// A unique name for a test's tables and schemas.
func uniqueName(_ prefix: String) -> String {
    "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
}
