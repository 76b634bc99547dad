import ArgumentParser
import ClientRuntime
import WorkerHost

@main
struct Shopfleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shopfleet",
        abstract: "Shopfleet: an e-commerce backend as a fleet of message-driven workers.",
        discussion: """
            Configuration comes from the environment (flags override it); see `shopfleet config`.
            """,
        subcommands: [ConfigCommand.self, CheckCommand.self, AdminCommand.self, KeysCommand.self, TopologyCommand.self, ContractsCommand.self, WorkerCommand.self, EdgeCommand.self, MigrateCommand.self, DevCommand.self, SendCommand.self, AskCommand.self, SagaCommand.self, DLQCommand.self, PaymentsSandboxCommand.self, BenchCommand.self, ChaosCommand.self])

    static func main() async {
        ParentWatch.startIfAsked()
        await main(nil)
    }
}
