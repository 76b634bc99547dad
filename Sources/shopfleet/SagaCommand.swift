import AMQPClient
import ArgumentParser
import Contracts
import DeadLetters
import FoundationEssentials
import Messaging
import Orders
import PostgresClient
import Sagas
import WorkerHost

/// `shopfleet saga`: the checkout sagas, for a person at a terminal (or a script, with `--json`).
struct SagaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "saga",
        abstract: "Inspect and steer checkout sagas: list, show, stuck, retry, cancel, graph.",
        subcommands: [List.self, Show.self, Stuck.self, Retry.self, Cancel.self, Graph.self])

    static let schema = OrdersService.schema

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sagas, newest first.")
        @Option(help: "Only sagas in this state (repeatable).") var state: [String] = []
        @Option(help: "Only sagas not updated for this long, e.g. 10m.") var olderThan: String?
        @Option(help: "Only this customer's sagas.") var customer: String?
        @Option(help: "At most this many.") var limit = 50
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            var filter = SagaReader.Filter()
            filter.states = state
            filter.olderThan = try olderThan.map(parseAge)
            filter.label = customer.map { ("customer", $0) }
            filter.limit = limit
            let sagas = try await withDatabase(connection) { try await SagaReader(schema: SagaCommand.schema).sagas(filter, on: $0) }
            if json { return try printJSON(sagas.map(SagaJSON.init)) }
            if sagas.isEmpty { return print("no sagas") }
            print(table(["SAGA", "STATE", "CUSTOMER", "STARTED", "LAST CHANGE"], sagas.map { saga in
                [saga.id, saga.state, saga.labels["customer"] ?? "", saga.startedAt.formatted(.iso8601), age(saga.updatedAt) + " ago"]
            }))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one saga's timeline: every step, with times, durations and message ids.")
        @Argument(help: "The saga id (the order id).") var id: String
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let reader = SagaReader(schema: SagaCommand.schema)
            let (saga, steps, timeout, letters) = try await withDatabase(connection) { database in
                guard let saga = try await reader.saga(id, on: database) else { throw ValidationError("no saga \(id)") }
                return (saga, try await reader.steps(of: id, on: database), try await reader.pendingTimeout(of: id, on: database),
                        try await DeadLetterReader(database: database).letters(ofSaga: id))
            }
            if json {
                struct Output: Encodable {
                    var saga: SagaJSON
                    var data: JSONValue
                    var steps: [SagaStep]
                    var pendingTimeout: Timeout?
                    var deadLetters: [DeadLetter]
                    struct Timeout: Encodable { var name: String; var dueAt: Date }
                }
                let data = (try? JSONDecoder().decode(JSONValue.self, from: Data(saga.data.utf8))) ?? .null
                return try printJSON(Output(saga: SagaJSON(saga), data: data, steps: steps,
                                            pendingTimeout: timeout.map { .init(name: $0.name, dueAt: $0.dueAt) },
                                            deadLetters: letters))
            }
            print("saga \(saga.id) (\(saga.type)): \(saga.state)\(saga.terminal ? " (finished)" : "")")
            for (key, value) in saga.labels.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
            print("  started \(saga.startedAt.formatted(.iso8601)), last change \(age(saga.updatedAt)) ago")
            if let timeout {
                let left = timeout.dueAt.timeIntervalSinceNow
                print("  pending timeout '\(timeout.name)' " + (left > 0 ? "in \(seconds(left))" : "overdue by \(seconds(-left))"))
            }
            let waiting = letters.filter { $0.status == "waiting" }.count
            if waiting > 0 {
                print("  \(waiting) dead letter\(waiting == 1 ? "" : "s") waiting: shopfleet dlq list --saga \(saga.id)")
            }
            print("")
            let start = steps.first?.at ?? saga.startedAt
            var previous = start
            // The saga's steps, and its dead letters where they failed (they are not steps: the
            // saga did not see them).
            var rows: [(at: Date, cells: [String])] = steps.map { step in
                let transition = step.stateBefore.map { before in
                    step.stateAfter.map { $0 == before ? before : "\(before) → \($0)" } ?? before
                } ?? step.stateAfter ?? ""
                let what = step.detail.map { "\(step.name): \($0)" } ?? step.name
                return (step.at, [String(step.seq), step.kind.rawValue, what, transition,
                                  step.kind == .sent || step.kind == .published ? step.messageID ?? ""
                                      : [step.messageType, step.messageID].compactMap { $0 }.joined(separator: " ")])
            }
            for letter in letters {
                rows.append((letter.lastFailedAt, ["-", "dead-letter",
                                                   "\(letter.type) failed on \(letter.failedQueue) [\(letter.errorType)], \(letter.status): "
                                                       + String(letter.reason.prefix(100)),
                                                   "", "letter \(letter.id) (shopfleet dlq show \(letter.id))"]))
            }
            rows.sort { $0.at < $1.at }
            print(table(["#", "AT", "+", "STEP", "WHAT", "STATE", "MESSAGE"], rows.map { row in
                defer { previous = max(previous, row.at) }
                return [row.cells[0], "+" + seconds(row.at.timeIntervalSince(start)), seconds(max(0, row.at.timeIntervalSince(previous)))]
                    + row.cells.dropFirst()
            }))
        }
    }

    struct Stuck: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sagas not finished and not moved for longer than --older-than, grouped by state.")
        @Option(help: "How long without a change counts as stuck, e.g. 10m.") var olderThan = "10m"
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            var filter = SagaReader.Filter()
            filter.olderThan = try parseAge(olderThan)
            filter.openOnly = true
            filter.limit = 10_000
            let (sagas, letters) = try await withDatabase(connection) { database in
                let sagas = try await SagaReader(schema: SagaCommand.schema).sagas(filter, on: database)
                return (sagas, try await DeadLetterReader(database: database).waitingCounts(sagas: sagas.map(\.id)))
            }
            let groups = Dictionary(grouping: sagas, by: \.state).sorted { $0.key < $1.key }
            if json {
                struct Stuck: Encodable {
                    var saga: SagaJSON
                    var deadLetters: Int
                    enum CodingKeys: String, CodingKey { case deadLetters }
                    func encode(to encoder: any Encoder) throws {
                        try saga.encode(to: encoder)
                        var container = encoder.container(keyedBy: CodingKeys.self)
                        try container.encode(deadLetters, forKey: .deadLetters)
                    }
                }
                struct Group: Encodable { var state: String; var count: Int; var sagas: [Stuck] }
                return try printJSON(groups.map { group in
                    Group(state: group.key, count: group.value.count,
                          sagas: group.value.map { Stuck(saga: SagaJSON($0), deadLetters: letters[$0.id] ?? 0) })
                })
            }
            if sagas.isEmpty { return print("no saga has been stuck for more than \(olderThan)") }
            for (state, members) in groups {
                print("\(state): \(members.count)")
                for saga in members.prefix(20) {
                    let waiting = letters[saga.id] ?? 0
                    print("  \(saga.id)  last change \(age(saga.updatedAt)) ago"
                          + (waiting > 0 ? "  — \(waiting) dead letter\(waiting == 1 ? "" : "s") waiting (shopfleet dlq list --saga \(saga.id))" : ""))
                }
                if members.count > 20 { print("  … and \(members.count - 20) more (shopfleet saga list --state \(state))") }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send the saga's current step again (after fixing what made it stick); from compensation_failed, start compensating again.")
        @Argument(help: "The saga id (the order id).") var id: String
        @Option(help: "Why (kept in the saga's step log).") var reason: String?
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await send(RetryOrderSaga(orderID: id, reason: reason, requestedBy: operatorName), saga: id, connection)
            print("asked the orders worker to retry saga \(id); follow it with: shopfleet saga show \(id)")
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start compensating the saga: void the payment, release the stock, cancel the order.")
        @Argument(help: "The saga id (the order id).") var id: String
        @Option(help: "Why; shown to the customer as the cancellation reason.") var reason = "cancelled by an operator"
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await send(CancelOrder(orderID: id, customerID: nil, reason: reason, requestedBy: operatorName), saga: id, connection)
            print("asked the orders worker to cancel saga \(id); follow it with: shopfleet saga show \(id)")
        }
    }

    struct Graph: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the checkout saga's state machine as a Mermaid diagram.")
        func run() { print(Checkout.mermaid()) }
    }
}

/// A saga as `--json` prints it: the same fields in every version.
struct SagaJSON: Encodable {
    var id: String
    var type: String
    var state: String
    var terminal: Bool
    var labels: [String: String]
    var startedAt: Date
    var updatedAt: Date
    init(_ saga: SagaRecord) {
        id = saga.id
        type = saga.type
        state = saga.state
        terminal = saga.terminal
        labels = saga.labels
        startedAt = saga.startedAt
        updatedAt = saga.updatedAt
    }
}

func withDatabase<T: Sendable>(_ connection: ConnectionOptions, _ body: (PostgresClient) async throws -> T) async throws -> T {
    let client = PostgresClient(configuration: try PostgresConfiguration(url: try connection.configuration().databaseURL), maximumConnections: 1)
    do {
        let value = try await body(client)
        await client.close()
        return value
    } catch {
        await client.close()
        throw error
    }
}

/// Sends `command` for saga `saga` (its envelope names the saga, as the operations API's do: a
/// batch of the orders worker locks and reads the sagas its messages name up front).
private func send<C: Command>(_ command: C, saga: String, _ connection: ConnectionOptions) async throws {
    try await publish(try Envelope(command, sagaID: saga), to: C.queue, config: try connection.configuration())
}

/// Who runs the command, for the saga's step log.
var operatorName: String { ProcessInfo.processInfo.environment["USER"].map { "\($0) (shopfleet CLI)" } ?? "shopfleet CLI" }

func parseAge(_ text: String) throws -> Duration {
    guard let ms = Topology.milliseconds(text) else { throw ValidationError("'\(text)' is not a duration such as 30s, 10m or 2h") }
    return .milliseconds(ms)
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

func seconds(_ interval: Double) -> String {
    if interval < 1 { return "\(Int((interval * 1000).rounded()))ms" }
    if interval < 120 {
        let tenths = Int((interval * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)s"
    }
    if interval < 7200 { return "\(Int(interval / 60))m" }
    return "\(Int(interval / 3600))h"
}

func age(_ date: Date) -> String { seconds(-date.timeIntervalSinceNow) }
