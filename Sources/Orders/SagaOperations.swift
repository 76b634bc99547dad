import Contracts
import FoundationEssentials
import Messaging
import PostgresClient
import Sagas

/// The orders service's answers to operators (the console, through the edge): its sagas, their
/// step logs and the checkout's state machine. The same data `shopfleet saga` reads directly.
enum SagaOperations {
    static func add(to handlers: inout HandlerRegistry, schema: String) {
        let reader = SagaReader(schema: schema)

        handlers.answer(ListSagas.self) { query, context in
            var filter = SagaReader.Filter()
            filter.states = query.states
            filter.olderThan = query.olderThanSeconds.map { .milliseconds(Int64((min($0, ListSagas.longestAge) * 1000).rounded())) }
            filter.label = query.customerID.map { ("customer", $0) }
            filter.openOnly = query.openOnly
            filter.limit = query.limit
            return try await reader.sagas(filter, on: context.database).map(summary)
        }

        handlers.answer(ListStuckSagas.self) { query, context in
            var filter = SagaReader.Filter()
            filter.olderThan = .milliseconds(Int64((min(query.olderThanSeconds, ListSagas.longestAge) * 1000).rounded()))
            filter.openOnly = true
            filter.leastRecentlyMovedFirst = true
            filter.limit = query.limit
            let sagas = try await reader.sagas(filter, on: context.database)
            let waits = try await reader.waits(of: sagas.map(\.id), on: context.database)
            return sagas.map { saga in
                StuckSaga(saga: summary(saga), reason: reason(saga, waits[saga.id]))
            }
        }

        handlers.answer(GetSagaTimeline.self) { query, context in
            guard let saga = try await reader.saga(query.sagaID, on: context.database) else { return nil }
            let steps = try await reader.steps(of: saga.id, on: context.database)
            let timeout = try await reader.pendingTimeout(of: saga.id, on: context.database)
            let data = (try? JSONDecoder().decode(JSONValue.self, from: Data(saga.data.utf8))) ?? .null
            return SagaTimeline(
                saga: summary(saga), data: data,
                steps: steps.map { step in
                    SagaTimelineStep(seq: step.seq, at: precise(step.at), kind: step.kind.rawValue, name: step.name,
                                     messageType: step.messageType, messageId: step.messageID, stateBefore: step.stateBefore,
                                     stateAfter: step.stateAfter, detail: step.detail)
                },
                pendingTimeout: timeout.map { .init(name: $0.name, dueAt: precise($0.dueAt)) })
        }

        handlers.answer(GetSagaDefinition.self) { query, _ in
            guard query.name == Checkout.name else { return nil }
            return SagaDiagram(
                name: Checkout.name, initial: Checkout.initialState.rawValue,
                states: Checkout.State.allCases.map {
                    .init(name: $0.rawValue, terminal: Checkout.terminalStates.contains($0), status: $0.orderStatus.rawValue)
                },
                transitions: Checkout.edges.map { .init(from: $0.from.rawValue, to: $0.to.rawValue, on: $0.on) },
                mermaid: Checkout.mermaid())
        }
    }

    static func summary(_ saga: SagaRecord) -> SagaSummary {
        SagaSummary(id: saga.id, type: saga.type, state: saga.state,
                    status: Checkout.State(rawValue: saga.state)?.orderStatus.rawValue ?? "unknown", terminal: saga.terminal,
                    customerId: saga.labels["customer"], startedAt: precise(saga.startedAt), updatedAt: precise(saga.updatedAt))
    }

    /// What a stuck saga waits for, in words: the command it sent last, and its timeout.
    static func reason(_ saga: SagaRecord, _ wait: SagaReader.Wait?) -> String {
        var parts = ["in \(saga.state) since \(precise(saga.updatedAt))"]
        if let sent = wait?.lastSent { parts.append("sent \(sent) and has had no answer") }
        if let timeout = wait?.timeout {
            let left = timeout.dueAt.timeIntervalSinceNow
            parts.append("timeout '\(timeout.name)' " + (left > 0 ? "due in \(Int(left.rounded())) s" : "overdue by \(Int((-left).rounded())) s"))
        } else {
            parts.append("no timeout pending")
        }
        return parts.joined(separator: "; ")
    }

    static func precise(_ date: Date) -> String { date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)) }
}

extension SagaReader {
    /// What each saga waits for: the last command it sent, its pending timeout.
    struct Wait: Sendable {
        var lastSent: String?
        var timeout: (name: String, dueAt: Date)?
    }

    func waits(of ids: [String], on database: PostgresClient) async throws -> [String: Wait] {
        guard !ids.isEmpty else { return [:] }
        let table = quoteIdentifier(schema)
        let rows = try await database.query("""
            SELECT s.id,
                   (SELECT st.name FROM \(table).saga_steps st
                    WHERE st.saga_id = s.id AND st.kind = 'sent' ORDER BY st.seq DESC LIMIT 1),
                   coalesce(t.timeout_name, old.name), coalesce(t.timeout_due_at, old.due_at)
            FROM unnest($1::text[]) AS s(id)
            LEFT JOIN \(table).sagas t ON t.id = s.id AND t.timeout_due_at IS NOT NULL
            LEFT JOIN \(table).saga_timeouts old ON old.saga_id = s.id  -- written by a replica of the version before
            """, [ids])
        var waits: [String: Wait] = [:]
        for row in rows {
            var wait = Wait(lastSent: try row.decode(String?.self, 1))
            if let name = try row.decode(String?.self, 2) { wait.timeout = (name, try row.decode(Date.self, 3)) }
            waits[try row.decode(String.self, 0)] = wait
        }
        return waits
    }
}
