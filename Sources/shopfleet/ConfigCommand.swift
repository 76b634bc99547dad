import ArgumentParser
import ClientRuntime
import Fleet
import WorkerHost

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the configuration keys, their defaults, and the values in effect (passwords redacted).")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: ArgumentHelp("Show only what a process of this role is given when the fleet starts it (its own user, role and secrets), redacted.",
                               valueName: "role"))
    var role: String?

    func run() async throws {
        let config = try connection.configuration()
        if let role {
            try show(role: role, config)
            return
        }
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

    /// What ``FleetPlan`` gives a process of `role`: the shared settings, and of the guarded ones
    /// only those its role holds, with its own broker user and database role.
    func show(role: String, _ config: ShopfleetConfiguration) throws {
        let roles = FleetPlan.workerRoles + ["edge", "payments-sandbox"]
        guard roles.contains(role) else { throw ValidationError("no role '\(role)'; the roles are \(roles.joined(separator: ", "))") }
        let secret = config.value(ShopfleetConfiguration.fleetSecret)
        let identities = secret.isEmpty ? nil : try? FleetIdentities(secret: secret)
        print("role \(role)" + (identities == nil ? " (SHOPFLEET_FLEET_SECRET not set: the operator's URLs are passed on as they are)" : ""))
        let share = FleetPlan.share(of: role, from: Dictionary(uniqueKeysWithValues: ShopfleetConfiguration.keys.map { ($0.name, config.value($0)) }))
        for key in ShopfleetConfiguration.keys where FleetPlan.holders[key.name] != nil {
            if let value = share[key.name] {
                let shown = ShopfleetConfiguration.secretKeys.contains(key.name) ? (value.isEmpty ? "not set" : "set (hidden)") : ServerURL.redact(value)
                print("  holds    \(key.name) = \(shown)")
            } else {
                print("  withheld \(key.name)")
            }
        }
    }
}
