import ArgumentParser
import ClientRuntime
import WorkerHost

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
            if ShopfleetConfiguration.secretKeys.contains(key.name) {
                print("  default: none")
                print("  in use:  \(config.value(key).isEmpty ? "not set" : "set (hidden)")  (from \(config.source(key).rawValue))")
            } else {
                print("  default: \(ServerURL.redact(key.defaultValue))")
                print("  in use:  \(ServerURL.redact(config.value(key)))  (from \(config.source(key).rawValue))")
            }
        }
    }
}
