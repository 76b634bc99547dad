public import AMQPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Logging
import Messaging
import Synchronization

/// Products the edge has read recently, kept current by the catalog's events: a product read is
/// then an HTTP exchange, not a broker round trip. The edge still never opens the database: it
/// learns products from the catalog's answers and events. Entries also expire (30 s), which bounds
/// how stale one can be if events stop arriving (a broker reconnect loses the edge's queue until it
/// is made again).
final class ProductCache: Sendable {
    struct Entry: Sendable {
        var product: Product
        var storedAt: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Bumped by every catalog event: an answer asked for before an event must not overwrite it.
    private let changes = Atomic<Int>(0)
    let lifetime: Duration

    init(lifetime: Duration = .seconds(30)) { self.lifetime = lifetime }

    func product(_ id: String) -> Product? {
        entries.withLock { entries in
            guard let entry = entries[id] else { return nil }
            if ContinuousClock.now - entry.storedAt > lifetime {
                entries[id] = nil
                return nil
            }
            return entry.product
        }
    }

    /// Reads through the cache; `fetch` asks the catalog on a miss.
    func product(_ id: String, fetch: () async throws -> Product?) async throws -> Product? {
        if let cached = product(id) { return cached }
        let before = changes.load(ordering: .acquiring)
        guard let fetched = try await fetch() else { return nil }
        entries.withLock { entries in
            if changes.load(ordering: .acquiring) == before, entries.count < 100_000 {
                entries[id] = Entry(product: fetched, storedAt: .now)
            }
        }
        return fetched
    }

    func apply(upserted product: Product) {
        changes.add(1, ordering: .releasing)
        entries.withLock { $0[product.id] = Entry(product: product, storedAt: .now) }
    }

    func apply(deactivated id: String) {
        changes.add(1, ordering: .releasing)
        entries.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// Follows the catalog's events on a connection and a queue of its own (exclusive, deleted
    /// with the connection), made again whenever the connection drops — with the entries dropped
    /// too, since events may have been missed meanwhile. Runs until cancelled.
    func follow(_ configuration: AMQPConfiguration, logger: Logger) async {
        var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(10))
        while !Task.isCancelled {
            do {
                var own = configuration
                own.connectionName = "shopfleet edge product cache"
                let connection = try await AMQPConnection.connect(own, logger: logger)
                let channel = try await connection.openChannel()
                let queue = "edge.products.\(UUIDv7.generate())"
                _ = try await channel.declareQueue(queue, durable: false, exclusive: true, autoDelete: true,
                                                   arguments: ["x-queue-type": .string("classic")])
                try await channel.bindQueue(queue, to: ProductUpserted.exchange, routingKey: ProductUpserted.type)
                try await channel.bindQueue(queue, to: ProductDeactivated.exchange, routingKey: ProductDeactivated.type)
                let consumer = try await channel.consume(queue: queue, noAck: true)
                backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(10))
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            for try await delivery in consumer { self.apply(delivery) }
                        } catch {}
                    }
                    group.addTask {
                        for await event in connection.events {
                            if case .disconnected = event { return }
                        }
                    }
                    await group.next()
                    group.cancelAll()
                }
                await connection.close()
            } catch {
                logger.warning("product cache cannot follow the catalog; retrying", metadata: ["error": .string("\(error)")])
            }
            entries.withLock { $0.removeAll() }
            try? await Task.sleep(for: backoff.next())
        }
    }

    private func apply(_ delivery: AMQPDelivery) {
        switch delivery.properties.type {
        case ProductUpserted.type?:
            if let event = try? MessageCodec.decode(ProductUpserted.self, from: delivery.body, typeName: ProductUpserted.type) {
                apply(upserted: event.product)
            }
        case ProductDeactivated.type?:
            if let event = try? MessageCodec.decode(ProductDeactivated.self, from: delivery.body, typeName: ProductDeactivated.type) {
                apply(deactivated: event.productID)
            }
        default:
            break
        }
    }
}
