public import AMQPClient
import ClientRuntime
import FoundationEssentials
import Synchronization

/// Asks queries of other domains over request/reply (direct reply-to), each with a deadline.
public final class QueryClient: Sendable {
    /// The `type` of a reply that reports a failed query instead of an answer.
    public static let errorReplyType = "shopfleet.QueryFailed.v1"

    public enum Failure: Error, CustomStringConvertible, Sendable, Equatable {
        /// No reply within the deadline (the domain is down, slow, or nobody consumes its queue).
        case timeout(type: String, after: Duration)
        /// No queue takes the query: the topology is not applied.
        case noSuchQueue(type: String, queue: String)
        /// The domain failed to answer (a bug, a server it needs is down).
        case failed(type: String, message: String)
        /// The domain refused the request for good: `kind` says why (`validation`, `not-found`,
        /// `limit`, `empty`, …), as its handler's ``PermanentFailure`` did.
        case rejected(type: String, kind: String, message: String)
        /// The reply could not be decoded.
        case badReply(type: String, message: String)

        public var description: String {
            switch self {
            case .timeout(let type, let after): return "\(type): no reply within \(after)"
            case .noSuchQueue(let type, let queue): return "\(type): no queue '\(queue)' takes it"
            case .failed(let type, let message): return "\(type) failed: \(message)"
            case .rejected(let type, let kind, let message): return "\(type) refused (\(kind)): \(message)"
            case .badReply(let type, let message): return "\(type): the reply could not be read: \(message)"
            }
        }
    }

    private let requester: AMQPRequester

    public init(connection: AMQPConnection) async throws {
        requester = try await AMQPRequester.open(on: connection)
    }

    /// Sends `query` to its domain and decodes the reply.
    ///
    /// The request carries its deadline (`x-deadline`), and the worker that takes it after that
    /// drops it: nobody waits for the answer. It carries no broker expiry, since a request queue
    /// with a dead-letter policy would dead-letter an expired request, paging an operator for a
    /// question nobody is asking any more.
    public func ask<Q: Query>(_ query: Q, timeout: Duration = .seconds(5), sagaID: String? = nil) async throws -> Q.Reply {
        var envelope = try Envelope(query, sagaID: sagaID)
        envelope.traceparent = TraceParent.random().description
        envelope.deadline = Int64((Date().timeIntervalSince1970 + timeout.seconds) * 1000)
        var properties = envelope.properties
        properties.persistent = false
        properties.correlationID = envelope.messageID
        let reply: AMQPMessage
        do {
            reply = try await requester.request(envelope.body, routingKey: Q.queue, properties: properties, timeout: timeout, expires: false)
        } catch let error as AMQPError where error.code == .timeout {
            throw Failure.timeout(type: Q.type, after: timeout)
        } catch let error as AMQPError where error.code == .unroutable {
            throw Failure.noSuchQueue(type: Q.type, queue: Q.queue)
        }
        if reply.properties.type == Self.errorReplyType {
            let fields = (try? JSONDecoder().decode([String: String].self, from: Data(reply.body))) ?? [:]
            let message = fields["error"] ?? reply.bodyString
            if let kind = fields["kind"] { throw Failure.rejected(type: Q.type, kind: kind, message: message) }
            throw Failure.failed(type: Q.type, message: message)
        }
        do {
            return try MessageCodec.decode(Q.Reply.self, from: reply.body, typeName: Q.type + " reply")
        } catch {
            throw Failure.badReply(type: Q.type, message: error.description)
        }
    }

    public func close() async throws { try await requester.close() }
}

/// One ``QueryClient`` per worker, opened the first time a handler asks something (most workers
/// never do), and opened again after a failure to open.
final class QueryClients: Sendable {
    private let connection: AMQPConnection
    private let opened = Mutex<Task<QueryClient, any Error>?>(nil)

    init(connection: AMQPConnection) { self.connection = connection }

    func client() async throws -> QueryClient {
        let task = opened.withLock { task in
            if let task { return task }
            let created = Task { [connection] in try await QueryClient(connection: connection) }
            task = created
            return created
        }
        do {
            return try await task.value
        } catch {
            opened.withLock { $0 = nil }
            throw error
        }
    }

    func close() async {
        let task = opened.withLock { $0 }
        try? await task?.value.close()
    }
}
