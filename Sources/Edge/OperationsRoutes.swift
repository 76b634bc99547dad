import Auth
import Contracts
import FoundationEssentials
import Hummingbird
import HTTPTypes
import Messaging
import RabbitManagement

// MARK: - /v1/admin/sagas, /v1/admin/dead-letters, /v1/admin/fleet: the operations console's API

/// What the operations console reads and does, for the admin role only. The data comes from the
/// services that own it (orders for sagas, the dead-letter store for letters) over the broker, and
/// from RabbitMQ's management API for the queues: the edge opens no database.
struct OperationsRoutes {
    let edge: EdgeServer

    struct Accepted: Encodable { var accepted: String }

    func add(sagas group: RouterGroup<EdgeContext>) {
        group.get { request, context -> Response in
            _ = try context.admin()
            let query = request.uri.queryParameters
            let states = query.getAll("state").flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
            let list = try edge.checked(ListSagas(
                states: states, olderThanSeconds: try Self.seconds(query["olderThan"].map(String.init), "olderThan"),
                customerID: query["customer"].map(String.init).flatMap { $0.isEmpty ? nil : $0 },
                openOnly: query["open"] == "true", limit: try Self.integer(query["limit"].map(String.init), "limit", default: 50, in: 1...1000)))
            struct Page: Encodable { var items: [SagaSummary] }
            return try json(Page(items: try await edge.ask(list)))
        }

        group.get("stuck") { request, context -> Response in
            _ = try context.admin()
            let olderThan = try Self.seconds(request.uri.queryParameters["olderThan"].map(String.init), "olderThan") ?? 600
            let stuck = try await edge.ask(try edge.checked(ListStuckSagas(olderThanSeconds: olderThan)))
            // What the dead-letter store holds for them says more than "no answer": the command failed.
            // Without its answer the sagas still show, with why their letters do not.
            var letters: [String: CountWaitingDeadLetters.Waiting] = [:]
            var unavailable: String?
            if !stuck.isEmpty {
                do {
                    letters = try await edge.ask(CountWaitingDeadLetters(sagaIDs: stuck.map(\.saga.id)))
                } catch let problem as Problem {
                    unavailable = problem.detail
                }
            }
            struct Stuck: Encodable { var saga: SagaSummary; var reason: String; var deadLetters: Int }
            struct Page: Encodable { var items: [Stuck]; var deadLettersUnavailable: String? }
            return try json(Page(items: stuck.map { item in
                guard let waiting = letters[item.saga.id] else { return Stuck(saga: item.saga, reason: item.reason, deadLetters: 0) }
                return Stuck(saga: item.saga, reason: "\(waiting.newestType) was dead-lettered: \(waiting.newestReason); \(item.reason)",
                             deadLetters: waiting.count)
            }, deadLettersUnavailable: unavailable))
        }

        group.get("definition") { _, context -> Response in
            _ = try context.admin()
            guard let diagram = try await edge.ask(GetSagaDefinition(name: "checkout")) else {
                throw Problem.notFound("the orders service has no checkout saga")
            }
            return try json(diagram)
        }

        group.get(":id") { _, context -> Response in
            _ = try context.admin()
            let id = try context.parameters.require("id")
            guard let timeline = try await edge.ask(try edge.checked(GetSagaTimeline(sagaID: id))) else {
                throw Problem.notFound("no saga \(id)")
            }
            struct Saga: Encodable {
                var saga: SagaSummary
                var data: JSONValue
                var steps: [SagaTimelineStep]
                var pendingTimeout: SagaTimeline.Timeout?
                var deadLetters: [DeadLetter]
                /// Why `deadLetters` is empty when the dead-letter store did not answer.
                var deadLettersUnavailable: String?
            }
            var saga = Saga(saga: timeline.saga, data: timeline.data, steps: timeline.steps, pendingTimeout: timeline.pendingTimeout,
                            deadLetters: [])
            do {
                saga.deadLetters = try await edge.ask(ListDeadLetters(sagaID: id, statuses: [], limit: 1000))
            } catch let problem as Problem {
                saga.deadLettersUnavailable = problem.detail
            }
            return try json(saga)
        }

        group.post(":id/retry") { request, context -> Response in
            let admin = try context.admin()
            let id = try context.parameters.require("id")
            let body = try await ReasonBody.read(request)
            // Checked here: a retry of no saga would be dead-lettered by orders while the operator got a 202.
            guard try await edge.ask(try edge.checked(GetSagaTimeline(sagaID: id))) != nil else { throw Problem.notFound("no saga \(id)") }
            try await edge.send(RetryOrderSaga(orderID: id, reason: try body.checkedReason(), requestedBy: admin.email), sagaID: id)
            return try json(Accepted(accepted: "retry of saga \(id)"), status: .accepted, headers: [.location: "/v1/admin/sagas/\(id)"])
        }

        group.post(":id/cancel") { request, context -> Response in
            let admin = try context.admin()
            let id = try context.parameters.require("id")
            let body = try await ReasonBody.read(request)
            guard try await edge.ask(try edge.checked(GetSagaTimeline(sagaID: id))) != nil else { throw Problem.notFound("no saga \(id)") }
            try await edge.send(CancelOrder(orderID: id, customerID: nil, reason: try body.checkedReason(), requestedBy: admin.email),
                                sagaID: id)
            return try json(Accepted(accepted: "cancel of saga \(id)"), status: .accepted, headers: [.location: "/v1/admin/sagas/\(id)"])
        }
    }

    func add(deadLetters group: RouterGroup<EdgeContext>) {
        group.get { request, context -> Response in
            _ = try context.admin()
            let query = request.uri.queryParameters
            func value(_ name: String) -> String? { query[name[...]].map(String.init).flatMap { $0.isEmpty ? nil : $0 } }
            let statuses = try Self.statuses(query.getAll("status"))
            let list = try edge.checked(ListDeadLetters(fingerprint: value("fingerprint"), sagaID: value("saga"), queue: value("queue"),
                                                        messageType: value("type"), statuses: statuses,
                                                        limit: try Self.integer(value("limit"), "limit", default: 100, in: 1...1000)))
            struct Page: Encodable { var items: [DeadLetter] }
            return try json(Page(items: try await edge.ask(list)))
        }

        group.get("groups") { request, context -> Response in
            _ = try context.admin()
            let statuses = try Self.statuses(request.uri.queryParameters.getAll("status"))
            struct Page: Encodable { var items: [DeadLetterGroup] }
            return try json(Page(items: try await edge.ask(try edge.checked(ListDeadLetterGroups(statuses: statuses)))))
        }

        group.get(":id") { _, context -> Response in
            _ = try context.admin()
            let id = try context.parameters.require("id")
            guard let letter = try await edge.ask(try edge.checked(GetDeadLetter(letterID: id))) else {
                throw Problem.notFound("no dead letter \(id)")
            }
            return try json(letter)
        }

        group.post("replay") { request, context -> Response in
            let admin = try context.admin()
            let body = try await ReplayBody.read(request)
            let rate = body.rate ?? 10
            guard rate > 0, rate <= 1000 else { throw Problem.invalid("rate must be more than 0 and at most 1000 letters a second") }
            let again = body.again ?? false
            let statuses = again ? ["waiting", "replayed"] : ["waiting"]
            let selected = try await select(body.selection(), statuses: statuses)
            let eligible = selected.filter { statuses.contains($0.status) }
            struct Skipped: Encodable { var id: String; var status: String }
            let skipped = selected.filter { letter in !eligible.contains { $0.id == letter.id } }.map { Skipped(id: $0.id, status: $0.status) }
            if body.dryRun ?? false {
                struct Preview: Encodable { var wouldReplay: [DeadLetter]; var skipped: [Skipped]; var rate: Double }
                return try json(Preview(wouldReplay: eligible, skipped: skipped, rate: rate))
            }
            guard !eligible.isEmpty else {
                throw Problem.conflict("nothing to replay: " + (selected.isEmpty ? "no letter matches"
                    : "the letters are " + Set(selected.map(\.status)).sorted().joined(separator: ", ") + (again ? "" : " (again: true replays replayed ones)")))
            }
            try await edge.send(try edge.checked(ReplayDeadLetters(letterIDs: eligible.map(\.id), ratePerSecond: rate, again: again,
                                                                  requestedBy: admin.email)))
            struct Replaying: Encodable { var accepted: String; var count: Int; var skipped: [Skipped] }
            return try json(Replaying(accepted: "replay of \(eligible.count) letter\(eligible.count == 1 ? "" : "s") at \(rate)/s",
                                      count: eligible.count, skipped: skipped), status: .accepted)
        }

        group.post("discard") { request, context -> Response in
            let admin = try context.admin()
            let body = try await DiscardBody.read(request)
            _ = try ReasonBody.checked(body.reason)
            // Waiting letters, and those whose replay has not gone yet; never one replayed meanwhile.
            let selected = try await select(try body.selection(), statuses: DiscardDeadLetters.discardable)
                .filter { DiscardDeadLetters.discardable.contains($0.status) }
            guard !selected.isEmpty else { throw Problem.conflict("nothing to discard: no letter that is not discarded already matches") }
            let discarded = try await edge.ask(try edge.checked(DiscardDeadLetters(letterIDs: selected.map(\.id), reason: body.reason,
                                                                                   requestedBy: admin.email,
                                                                                   statuses: DiscardDeadLetters.discardable)))
            struct Discarded: Encodable { var discarded: [String] }
            return try json(Discarded(discarded: discarded))
        }
    }

    /// The letters a replay or discard names: named ones whatever their status (so that a skip
    /// says why; an id that does not exist is an error), a group's or a saga's in `statuses` only.
    private func select(_ selection: LetterSelection, statuses: [String]) async throws -> [DeadLetter] {
        switch selection {
        case .ids(let ids):
            let found = try await edge.ask(try edge.checked(ListDeadLetters(ids: ids, statuses: [], limit: max(1, ids.count))))
            let missing = Set(ids).subtracting(found.map(\.id))
            guard missing.isEmpty else { throw Problem.notFound("no dead letter " + missing.sorted().joined(separator: ", ")) }
            return found
        case .fingerprint(let fingerprint):
            return try await edge.ask(try edge.checked(ListDeadLetters(fingerprint: fingerprint, statuses: statuses,
                                                                       limit: ReplayDeadLetters.maximumLetters)))
        case .saga(let saga):
            return try await edge.ask(try edge.checked(ListDeadLetters(sagaID: saga, statuses: statuses, limit: ReplayDeadLetters.maximumLetters)))
        }
    }

    func add(fleet group: RouterGroup<EdgeContext>) {
        group.get { _, context -> Response in
            _ = try context.admin()
            guard let monitor = edge.fleet else {
                throw Problem.unavailable("the fleet view is not configured: set SHOPFLEET_EDGE_MANAGEMENT_URL to the RabbitMQ management API")
            }
            return try json(try await monitor.view())
        }
    }

    // MARK: - Reading parameters

    static func seconds(_ text: String?, _ name: String) throws -> Double? {
        guard let text, !text.isEmpty else { return nil }
        guard let ms = Topology.milliseconds(text), ms <= Self.longestAge * 1000 else {
            throw Problem.invalid("\(name) must be a duration such as 30s, 10m or 2h, up to ten years; not '\(text.prefix(40))'")
        }
        return Double(ms) / 1000
    }

    /// The longest age a filter takes, in seconds (ten years).
    static let longestAge = 315_360_000

    static func integer(_ text: String?, _ name: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text, !text.isEmpty else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw Problem.invalid("\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(text.prefix(40))'")
        }
        return number
    }

    static func statuses(_ given: [String]) throws -> [String] {
        let all = given.flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
        if all.isEmpty { return ["waiting"] }
        do { return try DeadLetter.statuses(parsing: all) } catch { throw Problem.invalid("status: \(error)") }
    }
}

enum LetterSelection {
    case ids([String])
    case fingerprint(String)
    case saga(String)
}

/// Which letters: exactly one of `ids`, `fingerprint` and `saga`.
protocol SelectsLetters {
    var ids: [String]? { get }
    var fingerprint: String? { get }
    var saga: String? { get }
}

extension SelectsLetters {
    func selection() throws -> LetterSelection {
        switch (ids, fingerprint, saga) {
        case (let ids?, nil, nil):
            guard (1...ReplayDeadLetters.maximumLetters).contains(ids.count) else {
                throw Problem.invalid("ids must name 1 to \(ReplayDeadLetters.maximumLetters) letters")
            }
            return .ids(ids)
        case (nil, let fingerprint?, nil) where !fingerprint.isEmpty: return .fingerprint(fingerprint)
        case (nil, nil, let saga?) where !saga.isEmpty: return .saga(saga)
        default: throw Problem.invalid("name the letters with exactly one of ids, fingerprint and saga")
        }
    }
}

struct ReasonBody: StrictBody {
    static let fields: Set<String> = ["reason"]
    var reason: String
    func checkedReason() throws -> String { try Self.checked(reason) }

    /// An operator's reason: said, and at most 500 characters (what the contracts take).
    static func checked(_ reason: String) throws -> String {
        guard !reason.trimmingSpaces.isEmpty, reason.count <= 500 else { throw Problem.invalid("reason must say why, in 1 to 500 characters") }
        return reason
    }
}

struct ReplayBody: StrictBody, SelectsLetters {
    static let fields: Set<String> = ["ids", "fingerprint", "saga", "dryRun", "rate", "again"]
    var ids: [String]?
    var fingerprint: String?
    var saga: String?
    var dryRun: Bool?
    var rate: Double?
    var again: Bool?
}

struct DiscardBody: StrictBody, SelectsLetters {
    static let fields: Set<String> = ["ids", "fingerprint", "saga", "reason"]
    var ids: [String]?
    var fingerprint: String?
    var saga: String?
    var reason: String
}

/// The console's view of the fleet: queues (depth, rates, consumers) and, per service, whether
/// its workers consume every queue it owns, from RabbitMQ's management API.
struct FleetMonitor: Sendable {
    let management: RabbitManagement
    let vhost: String

    struct Queue: Encodable {
        var name: String
        var type: String
        var messages: Int
        var ready: Int
        var unacked: Int
        var consumers: Int
        var publishRate: Double
        var deliverRate: Double
    }

    struct Worker: Encodable {
        var service: String
        var consumers: Int
        var queues: Int
        var queuesConsumed: Int
        /// `running`: a consumer on every queue of the service; `degraded`: on some; `down`: none.
        var state: String
    }

    struct View: Encodable {
        var queues: [Queue]
        var workers: [Worker]
    }

    func view() async throws -> View {
        let queues: [RabbitManagement.QueueOverview]
        do {
            queues = try await management.queueOverview(vhost: vhost)
        } catch {
            throw Problem.unavailable("the RabbitMQ management API did not answer: \(error)")
        }
        let rows = queues.map { queue in
            Queue(name: queue.name, type: queue.type ?? "", messages: queue.messages ?? 0, ready: queue.messages_ready ?? 0,
                  unacked: queue.messages_unacknowledged ?? 0, consumers: queue.consumers ?? 0,
                  publishRate: queue.message_stats?.publish_details?.rate ?? 0,
                  deliverRate: queue.message_stats?.deliver_get_details?.rate ?? 0)
        }.sorted { $0.name < $1.name }
        // A service's queues are named `<service>.…` (the dead-letter store's also `shopfleet.dead-letters`).
        var byService: [String: [Queue]] = [:]
        for queue in rows {
            let prefix = queue.name.split(separator: ".").first.map(String.init) ?? queue.name
            guard prefix != "edge", !queue.name.contains(".retry"), !queue.name.hasSuffix(".unstored") else { continue }
            byService[prefix == "shopfleet" ? "deadletters" : prefix, default: []].append(queue)
        }
        let workers = byService.keys.sorted().map { service in
            let owned = byService[service]!
            let consumed = owned.filter { $0.consumers > 0 }.count
            return Worker(service: service, consumers: owned.reduce(0) { $0 + $1.consumers },
                          queues: owned.count, queuesConsumed: consumed,
                          state: consumed == owned.count ? "running" : consumed == 0 ? "down" : "degraded")
        }
        return View(queues: rows, workers: workers)
    }
}
