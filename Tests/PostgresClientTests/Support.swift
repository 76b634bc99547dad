import PostgresClient
import ShopfleetTesting

func testConfiguration() throws -> PostgresConfiguration {
    try PostgresConfiguration(url: TestServers.databaseURL())
}

func uniqueName(_ prefix: String) -> String { TestServers.uniqueName(prefix) }
