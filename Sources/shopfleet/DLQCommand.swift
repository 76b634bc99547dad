import AMQPClient
import ArgumentParser
import Contracts
import DeadLetters
import FoundationEssentials
import Messaging
import PostgresClient
import WorkerHost

/// `shopfleet dlq`: what the fleet could not process, for a person to look at, fix and send back.
struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Dead letters: list, group by failure, show, replay to their queue, discard.",
        discussion: """
            The deadletters worker stores every message the fleet dead-lettered (retries used up, \
            undecodable, unknown type, invalid, delivery limit). A letter is waiting until it is \
            replayed (sent back to the queue it failed on, with its message id) or discarded.
            """,
        subcommands: [List.self, Groups.self, Show.self, Replay.self, Discard.self])

    /// The filters `list`, `replay` and `discard` share.
    struct Selection: ParsableArguments {
        @Option(help: "Only letters that failed on this queue.") var queue: String?
        @Option(help: "Only letters of this message type.") var type: String?
        @Option(help: "Only this saga's letters.") var saga: String?
        @Option(help: "Only letters with this failure fingerprint (see `dlq groups`).") var fingerprint: String?
        @Option(help: "Only letters whose last failure is at least this old, e.g. 10m.") var olderThan: String?
        @Option(help: "Only letters whose last failure is at most this old, e.g. 1h.") var newerThan: String?

        func filter(ids: [String] = []) throws -> DeadLetterFilter {
            var filter = DeadLetterFilter()
            filter.ids = ids
            filter.queue = queue
            filter.type = type
            filter.sagaID = saga
            filter.fingerprint = fingerprint
            filter.olderThan = try olderThan.map(parseAge)
            filter.newerThan = try newerThan.map(parseAge)
            return filter
        }
    }

    static let statuses = DeadLetter.statuses

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, oldest failure first.")
        @OptionGroup var selection: Selection
        @Option(help: "waiting (default), replayed, discarded or all; repeatable.") var status: [String] = ["waiting"]
        @Option(help: "At most this many.") var limit = 50
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            var filter = try selection.filter()
            filter.statuses = try DLQCommand.statuses(status)
            filter.limit = limit
            let letters = try await withDatabase(connection) { try await DeadLetterReader(database: $0).letters(filter) }
            if json { return try printJSON(letters) }
            if letters.isEmpty { return print("no dead letters" + (filter.statuses == ["waiting"] ? " waiting" : "")) }
            print(table(["ID", "LAST FAILED", "QUEUE", "TYPE", "ERROR TYPE", "ATTEMPTS", "STATUS", "REASON"], letters.map { letter in
                [letter.id, age(letter.lastFailedAt) + " ago", letter.failedQueue, letter.type, letter.errorType, String(letter.attempts),
                 letter.status, String(letter.reason.prefix(80))]
            }))
            if letters.count == limit { print("(the first \(limit); --limit shows more, `dlq groups` counts them all)") }
        }
    }

    struct Groups: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Count dead letters per failure fingerprint (type + queue + error type + error message without ids and numbers).")
        @Option(help: "waiting (default), replayed, discarded or all; repeatable.") var status: [String] = ["waiting"]
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let statuses = try DLQCommand.statuses(status)
            let groups = try await withDatabase(connection) { try await DeadLetterReader(database: $0).groups(statuses: statuses) }
            if json { return try printJSON(groups) }
            if groups.isEmpty { return print("no dead letters" + (statuses == ["waiting"] ? " waiting" : "")) }
            for group in groups {
                print("\(group.fingerprint)  \(group.count) letter\(group.count == 1 ? "" : "s")  \(group.type) on \(group.failedQueue)  [\(group.errorType)]")
                print("    oldest \(age(group.oldest)) ago, newest \(age(group.newest)) ago")
                print("    e.g. \(group.sampleError.prefix(200))")
                print("    replay them: shopfleet dlq replay --fingerprint \(group.fingerprint)")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter: why, headers, body, and its history.")
        @Argument(help: "The letter id (from `dlq list`).") var id: String
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            guard let detail = try await withDatabase(connection, { try await DeadLetterReader(database: $0).letter(id) }) else {
                throw ValidationError("no dead letter \(id)")
            }
            if json {
                struct Output: Encodable {
                    var letter: DeadLetter
                    var properties: JSONValue
                    var headers: JSONValue
                    var body: String
                    var history: [DeadLetterDetail.Event]
                }
                return try printJSON(Output(letter: detail.letter, properties: detail.properties, headers: detail.headers,
                                            body: detail.bodyText, history: detail.history))
            }
            let letter = detail.letter
            print("dead letter \(letter.id): \(letter.status)" + (letter.statusNote.map { " (\($0))" } ?? ""))
            let fields: [(String, String?)] = [
                ("message id", letter.messageID), ("type", letter.type), ("failed on", letter.failedQueue),
                ("published to", letter.exchange.isEmpty ? "default exchange, routing key \(letter.routingKey)"
                    : "\(letter.exchange), routing key \(letter.routingKey)"),
                ("saga", letter.sagaID), ("error type", letter.errorType), ("reason", letter.reason),
                ("attempts", String(letter.attempts)), ("failures", String(letter.failures)),
                ("first failed", letter.firstFailedAt.formatted(.iso8601) + " (\(age(letter.firstFailedAt)) ago)"),
                ("last failed", letter.lastFailedAt.formatted(.iso8601) + " (\(age(letter.lastFailedAt)) ago)"),
                ("fingerprint", letter.fingerprint), ("replays", String(letter.replays)),
            ]
            for (name, value) in fields { if let value { print("  \(name + ":")\(String(repeating: " ", count: max(1, 14 - name.count)))\(value)") } }
            print("\nproperties:")
            if case .object(let properties) = detail.properties {
                for (key, value) in properties.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
            }
            print("\nheaders:")
            if case .object(let headers) = detail.headers {
                for (key, value) in headers.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
            }
            print("\nbody:\n" + detail.bodyText)
            print("\nhistory:")
            print(table(["AT", "WHAT", "DETAIL"], detail.history.map { event in
                [event.at.formatted(.iso8601), event.kind + (event.errorType.map { " (\($0))" } ?? ""), String(event.detail.prefix(160))]
            }))
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send dead letters back to the queue they failed on, with their message ids, at a bounded rate.",
            discussion: """
                Select letters by id, or by filters (--fingerprint, --queue, …), or all waiting ones with --all. \
                A replayed letter is marked and is not replayed again unless --again is given; a message \
                that was handled after all is not handled twice (same message id, the worker's inbox).
                """)
        @Argument(help: "Letter ids.") var ids: [String] = []
        @OptionGroup var selection: Selection
        @Flag(help: "Every waiting letter (when no id or filter is given).") var all = false
        @Flag(help: "Also replay letters that were replayed before.") var again = false
        @Option(help: "Letters per second at most.") var rate: Double = 10
        @Option(help: "At most this many letters.") var limit = 10_000
        @Flag(help: "List what would be replayed; send nothing.") var dryRun = false
        @Flag(help: "Print JSON.") var json = false
        @OptionGroup var connection: ConnectionOptions

        struct Line: Encodable {
            var id: String
            var outcome: String
            var queue: String
            var detail: String?
            /// When it was sent (ISO 8601 with milliseconds).
            var at: String

            init(id: String, outcome: String, queue: String, detail: String? = nil) {
                self.id = id
                self.outcome = outcome
                self.queue = queue
                self.detail = detail
                at = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            }
        }

        func run() async throws {
            guard rate > 0 else { throw ValidationError("--rate must be more than 0") }
            var filter = try selection.filter(ids: ids)
            guard filter.isNarrowed || all else {
                throw ValidationError("name letters by id, select them (--fingerprint, --queue, --type, --saga, --older-than), or pass --all")
            }
            // Named letters are looked at whatever their status, so that a skip says why.
            filter.statuses = ids.isEmpty ? (again ? ["waiting", "replayed"] : ["waiting"]) : []
            filter.limit = limit
            let config = try connection.configuration()
            let failed = try await withDatabase(connection) { database -> Int in
                let selected = try await DeadLetterReader(database: database).letters(filter)
                let missing = Set(ids).subtracting(selected.map(\.id))
                guard missing.isEmpty else { throw ValidationError("no dead letter " + missing.sorted().joined(separator: ", ")) }
                if dryRun {
                    try printDryRun(selected)
                    return 0
                }
                let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet dlq replay"))
                do {
                    let failed = try await send(selected, database: database, channel: try await amqp.openChannel())
                    await amqp.close()
                    return failed
                } catch {
                    await amqp.close()
                    throw error
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }

        func printDryRun(_ selected: [DeadLetter]) throws {
            if json {
                return try printJSON(selected.map { Line(id: $0.id, outcome: "would-replay", queue: $0.failedQueue, detail: $0.status) })
            }
            if selected.isEmpty { return print("nothing to replay") }
            print(table(["ID", "TYPE", "TO QUEUE", "STATUS", "REASON"], selected.map {
                [$0.id, $0.type, $0.failedQueue, $0.status, String($0.reason.prefix(80))]
            }))
            print("would replay \(selected.count) letter\(selected.count == 1 ? "" : "s") at \(rate)/s; nothing was sent (--dry-run)")
        }

        /// Replays the letters one by one at `--rate`, printing each outcome; returns how many failed.
        func send(_ selected: [DeadLetter], database: PostgresClient, channel: AMQPChannel) async throws -> Int {
            try await channel.enableConfirms()
            let replayer = DeadLetterOperator(database: database)
            var lines: [Line] = []
            var failed = 0
            let clock = ContinuousClock()
            let start = clock.now
            let interval = Duration.nanoseconds(Int64((1e9 / rate).rounded(.up)))
            var previous: ContinuousClock.Instant?
            for letter in selected {
                // Each send starts at least one interval after the one before, even after a slow
                // one: no catching up in bursts, so no second ever holds more than --rate.
                if let previous { try await clock.sleep(until: previous + interval) }
                previous = clock.now
                let sentAt = Date()
                var line: Line
                do {
                    switch try await replayer.replay(letter.id, on: channel, again: again) {
                    case .replayed(let queue): line = Line(id: letter.id, outcome: "replayed", queue: queue)
                    case .skipped(let why): line = Line(id: letter.id, outcome: "skipped", queue: letter.failedQueue, detail: why)
                    }
                } catch {
                    failed += 1
                    line = Line(id: letter.id, outcome: "failed", queue: letter.failedQueue, detail: "\(error)")
                }
                line.at = sentAt.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
                lines.append(line)
                if !json {
                    print("\(line.outcome) \(line.id) \(letter.type) → \(line.queue)" + (line.detail.map { ": \($0)" } ?? ""))
                }
            }
            let elapsed = clock.now - start
            if json {
                try printJSON(lines)
            } else {
                let replayed = lines.filter { $0.outcome == "replayed" }.count
                print("replayed \(replayed), skipped \(lines.count - replayed - failed), failed \(failed) in \(seconds(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))")
            }
            return failed
        }
    }

    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mark dead letters discarded, with a reason. They stay in the store, for the record.")
        @Argument(help: "Letter ids.") var ids: [String] = []
        @OptionGroup var selection: Selection
        @Flag(help: "Every waiting letter (when no id or filter is given).") var all = false
        @Option(help: "Why (required): kept with the letter.") var reason: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            guard !reason.trimmed().isEmpty else { throw ValidationError("--reason must say why") }
            var filter = try selection.filter(ids: ids)
            guard filter.isNarrowed || all else {
                throw ValidationError("name letters by id, select them (--fingerprint, --queue, --type, --saga, --older-than), or pass --all")
            }
            filter.statuses = ids.isEmpty ? ["waiting"] : []
            filter.limit = 1_000_000
            let discarded = try await withDatabase(connection) { database in
                let selected = try await DeadLetterReader(database: database).letters(filter)
                let missing = Set(ids).subtracting(selected.map(\.id))
                guard missing.isEmpty else { throw ValidationError("no dead letter " + missing.sorted().joined(separator: ", ")) }
                return try await DeadLetterOperator(database: database).discard(selected.map(\.id), reason: reason)
            }
            for id in discarded { print("discarded \(id)") }
            print("discarded \(discarded.count) letter\(discarded.count == 1 ? "" : "s")")
        }
    }

    static func statuses(_ given: [String]) throws -> [String] {
        do { return try DeadLetter.statuses(parsing: given) } catch { throw ValidationError("--status \(error)") }
    }
}
