import Contracts
import FoundationEssentials
import Messaging
import PostgresClient
@testable import Search
import ShopfleetTesting
import Testing

/// The search read model against a real PostgreSQL: a small catalog, queries people type (typos
/// included) and the products that must come first.
@Suite("Search relevance", .serialized)
struct RelevanceTests {
    static let catalog: [(id: String, name: String, description: String, category: String, price: Int, available: Int)] = [
        ("mug-enamel", "Enamel mug", "A blue enamel mug for camping, 350 ml.", "kitchen", 1250, 10),
        ("mug-ceramic", "Ceramic mug", "A stoneware mug glazed by hand.", "kitchen", 1490, 0),
        ("teapot", "Ceramic teapot", "Brews six cups; matches the ceramic mug.", "kitchen", 3900, 4),
        ("bowl", "Oak salad bowl", "Turned from a single piece of oak.", "kitchen", 4500, 2),
        ("board", "Walnut cutting board", "End grain walnut, oiled.", "kitchen", 5200, 7),
        ("lamp-oak", "Oak desk lamp", "A warm light for reading.", "home", 6900, 3),
        ("lamp-brass", "Brass floor lamp", "Tall, with a linen shade.", "home", 12900, 1),
        ("blanket", "Wool blanket", "Heavy and warm; moths hate it.", "home", 8900, 5),
        ("throw", "Linen throw", "Light as a blanket for summer evenings.", "home", 5900, 6),
        ("cushion", "Felt cushion", "Grey felt, feather filled.", "home", 3500, 0),
        ("backpack", "Canvas backpack", "Twenty litres, leather straps.", "outdoors", 7900, 8),
        ("bottle", "Steel water bottle", "Keeps water cold for a day.", "outdoors", 2900, 12),
        ("kite", "Cotton kite", "A diamond kite with a long tail.", "toys", 1900, 9),
        ("puzzle", "Wooden puzzle", "A thousand pieces of a map.", "toys", 2400, 3),
        ("notebook", "Cork notebook", "Dotted pages, cork cover.", "office", 1100, 20),
    ]

    /// A schema holding the catalog above, through the worker's own upsert and stock updates.
    func withCatalog(_ body: (PostgresClient, SearchService.Tables) async throws -> Void) async throws {
        let schema = TestServers.uniqueName("search")
        let database = PostgresClient(configuration: try PostgresConfiguration(url: try TestServers.databaseURL()), maximumConnections: 2)
        _ = try await Migrator(client: database, schema: schema).migrate(try RuntimeMigrations.with(SearchService.migrations))
        let tables = SearchService.Tables(schema: schema)
        try await database.transaction { connection in
            for item in Self.catalog {
                try await SearchService.upsert(Product(id: item.id, sku: item.id.uppercased(), name: item.name, description: item.description,
                                                       category: item.category, price: Money(amount: item.price, currency: "EUR")),
                                               tables, on: connection)
                try await SearchService.setAvailable(item.id.uppercased(), item.available, tables, on: connection)
            }
        }
        do {
            try await body(database, tables)
        } catch {
            _ = try? await database.query("DROP SCHEMA \(quoteIdentifier(schema)) CASCADE")
            await database.close()
            throw error
        }
        _ = try? await database.query("DROP SCHEMA \(quoteIdentifier(schema)) CASCADE")
        await database.close()
    }

    func ids(_ query: SearchProducts, _ database: PostgresClient, _ tables: SearchService.Tables) async throws -> [String] {
        try await SearchService.search(query, tables, on: database).hits.map(\.product.id)
    }

    /// Queries and the product that must come first (and, where it matters, second).
    static let relevance: [(query: String, first: String, second: String?)] = [
        ("enamel mug", "mug-enamel", nil),
        ("mug", "mug-enamel", "mug-ceramic"),
        ("enamle mug", "mug-enamel", nil),      // a swapped pair of letters
        ("teapott", "teapot", nil),             // a doubled letter
        ("backpak", "backpack", nil),           // a dropped letter
        ("lamps", "lamp-brass", "lamp-oak"),    // a plural: both lamps before anything else
        ("blanket", "blanket", "throw"),        // in the name beats in the description
        ("walnut board", "board", nil),
        ("oak", "bowl", "lamp-oak"),            // oak in name and description beats oak in the name only
        ("ceramic", "teapot", "mug-ceramic"),   // both say ceramic; the in-stock one first
    ]

    @Test func theRightProductComesFirst() async throws {
        try await withCatalog { (database: PostgresClient, tables: SearchService.Tables) async throws in
            for case let (text, first, second) in Self.relevance {
                let found = try await ids(SearchProducts(text: text), database, tables)
                #expect(found.first == first, "'\(text)' found \(found)")
                if let second {
                    #expect(found.dropFirst().first == second, "'\(text)' found \(found)")
                }
            }
            #expect(try await ids(SearchProducts(text: "submarine"), database, tables) == [])
        }
    }

    @Test func filtersAndSorts() async throws {
        try await withCatalog { (database: PostgresClient, tables: SearchService.Tables) async throws in
            #expect(try await ids(SearchProducts(category: "kitchen", sort: .priceAscending), database, tables)
                    == ["mug-enamel", "mug-ceramic", "teapot", "bowl", "board"])
            #expect(try await ids(SearchProducts(category: "home", sort: .priceDescending), database, tables).first == "lamp-brass")
            #expect(try await ids(SearchProducts(text: "mug", inStockOnly: true), database, tables) == ["mug-enamel", "teapot"])
            #expect(try await ids(SearchProducts(minimumPrice: 5000, maximumPrice: 7000, sort: .priceAscending), database, tables)
                    == ["board", "throw", "lamp-oak"])
        }
    }

    @Test func pagesWithACursorVisitEveryProductOnce() async throws {
        try await withCatalog { (database: PostgresClient, tables: SearchService.Tables) async throws in
            for sort in SearchProducts.Sort.allCases where sort != .relevance {
                var seen: [String] = []
                var cursor: String?
                repeat {
                    let page = try await SearchService.search(SearchProducts(sort: sort, limit: 4, cursor: cursor), tables, on: database)
                    #expect(page.hits.count <= 4)
                    seen += page.hits.map(\.product.id)
                    cursor = page.nextCursor
                } while cursor != nil
                #expect(seen.count == Self.catalog.count, "\(sort)")
                #expect(Set(seen).count == Self.catalog.count, "\(sort) repeated a product")
            }
            var relevant: [String] = []
            var cursor: String?
            repeat {
                let page = try await SearchService.search(SearchProducts(text: "oak mug lamp", sort: .relevance, limit: 1, cursor: cursor), tables, on: database)
                relevant += page.hits.map(\.product.id)
                cursor = page.nextCursor
            } while cursor != nil
            let all = try await ids(SearchProducts(text: "oak mug lamp", sort: .relevance, limit: 100), database, tables)
            #expect(relevant == all)
            do {
                _ = try await SearchService.search(SearchProducts(cursor: "not-a-cursor"), tables, on: database)
                Issue.record("a forged cursor was accepted")
            } catch let failure as PermanentFailure {
                #expect(failure.description.contains("cursor"))
            }
        }
    }
}
