import ArgumentParser
import ServiceDomains
import WorkerHost

/// `shopfleet-worker-ext <domain>`: the worker of payments, notifications or identity, the domains
/// that need an HTTP client with TLS or token signing.
@main
struct ShopfleetWorkerExt: WorkerExecutable {
    static let domains = ServiceDomains.table
    static let configuration: CommandConfiguration = commandConfiguration(name: ServiceDomains.executableName)
    @OptionGroup var arguments: WorkerArguments

    static func main() async { await start() }
}
