import ClientRuntime
import Synchronization

/// Request/reply over RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no reply queue to
/// declare or clean up. Requests are published with confirms and `mandatory`, so a request no queue
/// takes fails at once (`.unroutable`) instead of timing out. A reply that does not come within the
/// deadline is `.timeout`; a reply that comes later is dropped.
public final class AMQPRequester: Sendable {
    private enum Slot {
        case registered
        case waiting(UnsafeContinuation<AMQPMessage, any Error>)
        case arrived(AMQPMessage)
    }

    public let channel: AMQPChannel
    private let slots = Mutex<[String: Slot]>([:])

    private init(channel: AMQPChannel) {
        self.channel = channel
    }

    /// Opens a channel of its own on `connection` and starts the reply consumer.
    public static func open(on connection: AMQPConnection) async throws -> AMQPRequester {
        let channel = try await connection.openChannel()
        let requester = AMQPRequester(channel: channel)
        try await channel.enableConfirms()
        _ = try await channel.consume(queue: "amq.rabbitmq.reply-to", tag: nil, noAck: true, exclusive: false,
                                      arguments: [:]) { [weak requester] delivery in
            requester?.arrived(delivery.message)
        }
        return requester
    }

    /// Sends a request and waits for its reply up to `timeout`.
    ///
    /// With `expires` (the default) the request carries `timeout` as its `expiration`, so the
    /// broker drops it when nobody took it in time. A queue with a dead-letter policy dead-letters
    /// expired messages instead (quorum queues do so since RabbitMQ 3.10): a caller of such a queue
    /// passes `expires: false` and tells the consumer its deadline another way.
    public func request(_ body: [UInt8], exchange: String = "", routingKey: String,
                        properties: AMQPProperties = AMQPProperties(persistent: false),
                        timeout: Duration, expires: Bool = true) async throws -> AMQPMessage {
        var properties = properties
        let correlationID = properties.correlationID ?? "rr-\(UInt64.random(in: 0...UInt64.max))"
        properties.correlationID = correlationID
        properties.replyTo = "amq.rabbitmq.reply-to"
        if expires, properties.expiration == nil {
            // A request nobody answered in time is worthless: let the broker drop it.
            properties.expiration = String(max(1, Int(timeout.seconds * 1000)))
        }
        slots.withLock { $0[correlationID] = .registered }
        do {
            try await channel.publish(body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: true)
            return try await withDeadline(timeout) { try await self.wait(for: correlationID) }
        } catch let deadline as DeadlineExceeded {
            slots.withLock { _ = $0.removeValue(forKey: correlationID) }
            throw channel.connection.error(
                .timeout, "no reply to request on '\(exchange)'/'\(routingKey)' within \(deadline.after)")
        } catch {
            slots.withLock { _ = $0.removeValue(forKey: correlationID) }
            throw error
        }
    }

    public func close() async throws {
        try await channel.close()
    }

    private func wait(for correlationID: String) async throws -> AMQPMessage {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<AMQPMessage, any Error>) in
                let ready: Result<AMQPMessage, any Error>? = slots.withLock { slots in
                    switch slots[correlationID] {
                    case .arrived(let message):
                        slots[correlationID] = nil
                        return .success(message)
                    case .registered:
                        slots[correlationID] = .waiting(continuation)
                        return nil
                    case .waiting, nil:
                        return .failure(CancellationError())
                    }
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiting: UnsafeContinuation<AMQPMessage, any Error>? = slots.withLock { slots in
                if case .waiting(let continuation) = slots[correlationID] {
                    slots[correlationID] = nil
                    return continuation
                }
                slots[correlationID] = nil
                return nil
            }
            waiting?.resume(throwing: CancellationError())
        }
    }

    private func arrived(_ message: AMQPMessage) {
        guard let correlationID = message.properties.correlationID else { return }
        let waiting: UnsafeContinuation<AMQPMessage, any Error>? = slots.withLock { slots in
            switch slots[correlationID] {
            case .registered:
                slots[correlationID] = .arrived(message)
                return nil
            case .waiting(let continuation):
                slots[correlationID] = nil
                return continuation
            default:
                return nil  // late: its caller has given up
            }
        }
        waiting?.resume(returning: message)
    }
}

extension AMQPChannel {
    /// Answers a request received on this channel: to its reply-to address, with its correlation id.
    public func reply(to request: AMQPDelivery, body: [UInt8], properties: AMQPProperties = AMQPProperties(persistent: false)) async throws {
        guard let replyTo = request.properties.replyTo else {
            throw connection.error(.invalidConfiguration, "request \(request.properties.messageID ?? "") has no reply-to")
        }
        var properties = properties
        properties.correlationID = request.properties.correlationID
        try await publish(body, exchange: "", routingKey: replyTo, properties: properties)
    }
}
