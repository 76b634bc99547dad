import ArgumentParser
import ClientRuntime

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the configuration keys, their defaults, and the values in effect (passwords redacted).")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let config = try connection.configuration()
        for key in ShopfleetConfiguration.keys {
            print(key.name)
            print("  \(key.summary)")
            print("  default: \(ServerURL.redact(key.defaultValue))")
            print("  in use:  \(ServerURL.redact(config.value(key)))  (from \(config.source(key).rawValue))")
        }
    }
}
