import ArgumentParser
import Contracts
import FoundationEssentials
import Messaging

struct ContractsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "contracts",
        abstract: "The JSON shapes of every message type: record them, or check changes against the record.",
        subcommands: [Snapshot.self, Check.self])

    static let defaultFile = "contracts/snapshot.json"

    struct Snapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write contracts/snapshot.json; refuses a breaking change unless --allow-breaking.")
        @Option(help: "The snapshot file.")
        var file = ContractsCommand.defaultFile
        @Flag(help: "Record even an incompatible change (only before the type was ever deployed).")
        var allowBreaking = false

        func run() async throws {
            let current = try ContractSnapshot(ContractCatalog.all)
            if !allowBreaking, let data = FileManager.default.contents(atPath: file) {
                let breaking = try ContractSnapshot.decode(data).problems(with: current).filter { $0.contains("incompatible") || $0.contains("was removed") }
                if !breaking.isEmpty {
                    for problem in breaking { print(problem) }
                    throw ExitCode(1)
                }
            }
            guard FileManager.default.createFile(atPath: file, contents: Data(try current.json().utf8)) else {
                throw ValidationError("cannot write \(file)")
            }
            print("wrote \(file): \(current.contracts.count) contracts")
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Compare the contracts with contracts/snapshot.json.")
        @Option(help: "The snapshot file.")
        var file = ContractsCommand.defaultFile

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            let problems = try ContractSnapshot.decode(data).problems(with: try ContractSnapshot(ContractCatalog.all))
            for problem in problems { print(problem) }
            if !problems.isEmpty { throw ExitCode(1) }
            print("\(file) matches the contracts")
        }
    }
}
