import ClientRuntime
import PostgresClient
import Testing
import ShopfleetTesting

func testConfiguration() throws -> PostgresConfiguration {
    try PostgresConfiguration(url: TestServers.databaseURL())
}

func uniqueName(_ prefix: String) -> String { TestServers.uniqueName(prefix) }

/// How a connection is driven: by a thread of its own (blocking libpq calls there), or by a
/// thread it shares, without blocking (`PostgresConnection.connect(_:logger:on:)`). Every test
/// of the client's behaviour runs both ways.
enum Driving: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case ownThread, sharedThread
    var testDescription: String { rawValue }
}

/// The thread the shared-thread connections of the tests are driven by.
let sharedThread = ConnectionThread(name: "tests: shared thread")

func connect(_ configuration: PostgresConfiguration, _ driving: Driving) async throws -> PostgresConnection {
    switch driving {
    case .ownThread: try await PostgresConnection.connect(configuration)
    case .sharedThread: try await PostgresConnection.connect(configuration, on: sharedThread)
    }
}

func makeClient(_ configuration: PostgresConfiguration, _ driving: Driving, maximumConnections: Int,
            acquireTimeout: Duration = .seconds(10)) -> PostgresClient {
    PostgresClient(configuration: configuration, maximumConnections: maximumConnections, acquireTimeout: acquireTimeout,
                   on: driving == .sharedThread ? sharedThread : nil)
}
