import ArgumentParser
import ServiceDomains
import WorkerHost

/// `shopfleet-worker-ext <domain>`: the worker of payments, notifications or identity, the domains
/// that need an HTTP client with TLS or token signing. Usually started as `shopfleet worker
/// <domain>`, which becomes this process; the same arguments and configuration either way.
@main
struct ShopfleetWorkerExt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shopfleet-worker-ext",
        abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.",
        discussion: "The executable behind `shopfleet worker` for: "
            + ServiceDomains.table.listedNames.joined(separator: ", ") + ".")

    @OptionGroup var arguments: WorkerArguments

    static func main() async {
        ParentWatch.startIfAsked()
        await main(nil)
    }

    func run() async throws {
        try await arguments.run(domains: ServiceDomains.table)
    }
}
