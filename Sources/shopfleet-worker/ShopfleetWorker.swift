import ArgumentParser
import WorkerHost

/// `shopfleet-worker <domain>`: the worker of a domain that needs only the runtime (catalog,
/// inventory, orders, search, cart, deadletters).
@main
struct ShopfleetWorker: WorkerExecutable {
    static let domains = RuntimeDomains.table
    static let configuration: CommandConfiguration = commandConfiguration(name: "shopfleet-worker")
    @OptionGroup var arguments: WorkerArguments

    static func main() async { await start() }
}
