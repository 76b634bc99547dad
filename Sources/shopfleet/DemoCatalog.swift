import AMQPClient
import Contracts
import FoundationEssentials
import Messaging
import PostgresClient
import WorkerHost

/// A demo catalog for the local fleet: products `demo-0001` … with prices and stock made up from
/// their number (every tenth is out of stock), the same on every machine.
enum DemoCatalog {
    static let adjectives = ["Enamel", "Oak", "Linen", "Copper", "Wool", "Ceramic", "Bamboo", "Steel", "Glass", "Cotton",
                             "Walnut", "Slate", "Cork", "Brass", "Felt"]
    static let things: [(String, String)] = [
        ("mug", "kitchen"), ("bowl", "kitchen"), ("teapot", "kitchen"), ("cutting board", "kitchen"), ("lamp", "home"),
        ("cushion", "home"), ("vase", "home"), ("blanket", "home"), ("notebook", "office"), ("pen holder", "office"),
        ("desk tray", "office"), ("planter", "garden"), ("watering can", "garden"), ("bird feeder", "garden"),
        ("backpack", "outdoors"), ("water bottle", "outdoors"), ("puzzle", "toys"), ("kite", "toys"), ("scarf", "clothing"),
        ("cap", "clothing"),
    ]

    static func product(_ number: Int) -> (product: Product, stock: Int) {
        let adjective = adjectives[number % adjectives.count]
        let (thing, category) = things[(number / adjectives.count) % things.count]
        let padded = String(number).leftPadded(to: 4)
        let id = "demo-" + padded
        let price = 299 + (number * 7919) % 9700
        let product = Product(id: id, sku: "DEMO-" + padded, name: "\(adjective) \(thing)",
                              description: "A \(adjective.lowercased()) \(thing), demo product number \(number).",
                              category: category, price: Money(amount: price, currency: "EUR"))
        return (product, number % 10 == 0 ? 0 : 5 + (number * 31) % 46)
    }

    /// Sends the products and stock that are not there yet; how many products it sent.
    static func seed(products count: Int, config: ShopfleetConfiguration) async throws -> Int {
        let database = PostgresClient(configuration: try PostgresConfiguration(url: config.databaseURL), maximumConnections: 1)
        // The catalog and the read models fed by its events (search): a fleet that gained a read
        // model after it was seeded gets the products sent again (upserts change nothing else).
        func demoRows(_ table: String) async -> Int {
            (try? await database.query("SELECT count(*) FROM \(table) WHERE id LIKE 'demo-%'")[0].decode(Int.self, 0)) ?? 0
        }
        let existing = min(await demoRows("catalog.products"), await demoRows("search.products"))
        let stocked = (try? await database.query("SELECT sku FROM inventory.stock WHERE sku LIKE 'DEMO-%'")) 
        var withStock = Set<String>()
        if let stocked { for index in 0..<stocked.count { withStock.insert((try? stocked[index].decode(String.self, 0)) ?? "") } }
        await database.close()
        let items = (1...max(1, count)).map(product)
        let missingStock = items.filter { $0.stock > 0 && !withStock.contains($0.product.sku) }
        if existing >= count && missingStock.isEmpty { return 0 }

        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet dev seed"))
        do {
            let channel = try await amqp.openChannel()
            try await channel.enableConfirms()
            func send<C: Command>(_ command: C) async throws {
                let envelope = try Envelope(command)
                try await channel.publish(envelope.body, routingKey: C.queue, properties: envelope.properties, mandatory: true)
            }
            for item in items { try await send(UpsertProduct(product: item.product)) }
            for item in missingStock { try await send(AdjustStock(sku: item.product.sku, delta: item.stock, reason: "demo stock")) }
            await amqp.close()
        } catch {
            await amqp.close()
            throw error
        }
        return items.count
    }
}
