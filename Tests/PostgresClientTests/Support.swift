import ClientRuntime
import PostgresClient
import Testing
import ShopfleetTesting

func testConfiguration() throws -> PostgresConfiguration {
    try PostgresConfiguration(url: TestServers.databaseURL())
}

func uniqueName(_ prefix: String) -> String { TestServers.uniqueName(prefix) }

/// How a connection is driven: by a thread of its own, or by a thread it shares with others
/// (`PostgresConnection.connect(_:logger:on:)`). The client's tests run both ways.
enum Driving: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case ownThread, sharedThread
    var testDescription: String { rawValue }
    /// The thread to pass as `on:`.
    var thread: ConnectionThread? { self == .sharedThread ? testsSharedThread : nil }
}

/// The thread the shared-thread connections of the tests are driven by.
let testsSharedThread = ConnectionThread(name: "tests: shared thread")

func connect(_ configuration: PostgresConfiguration, _ driving: Driving) async throws -> PostgresConnection {
    try await PostgresConnection.connect(configuration, on: driving.thread)
}

func makeClient(_ configuration: PostgresConfiguration, _ driving: Driving, maximumConnections: Int,
                acquireTimeout: Duration = .seconds(10)) -> PostgresClient {
    PostgresClient(configuration: configuration, maximumConnections: maximumConnections, acquireTimeout: acquireTimeout,
                   on: driving.thread)
}
