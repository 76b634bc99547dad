import ArgumentParser
import WorkerHost

/// `shopfleet-worker <domain>`: the worker of a domain that needs only the runtime (catalog,
/// inventory, orders, search, cart, deadletters). Usually started as `shopfleet worker <domain>`,
/// which becomes this process; the same arguments and configuration either way.
@main
struct ShopfleetWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shopfleet-worker",
        abstract: "Run one domain's worker until SIGTERM: consume its queues, serve /healthz, /readyz, /metrics.",
        discussion: "The small executable behind `shopfleet worker` for: "
            + RuntimeDomains.table.listedNames.joined(separator: ", ") + ".")

    @OptionGroup var arguments: WorkerArguments

    static func main() async {
        ParentWatch.startIfAsked()
        await main(nil)
    }

    func run() async throws {
        try await arguments.run(domains: RuntimeDomains.table)
    }
}
