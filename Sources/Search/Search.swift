public import Contracts
import FoundationEssentials
public import Messaging
public import PostgresClient

/// Product search: a read model of the catalog (and of which SKUs are in stock) kept from events,
/// searched with PostgreSQL full-text search (name weighted over description) and trigram
/// similarity, so a misspelt word still matches.
public enum SearchService {
    public static let schema = "search"

    public static let migrations = [
        Migration(version: 100, name: "products", sql: """
            -- Trigram matching, once per database, in public (every service's search_path has it).
            CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
            CREATE TABLE products (
                id text PRIMARY KEY,
                sku text NOT NULL,
                name text NOT NULL,
                description text NOT NULL,
                category text NOT NULL,
                price_amount bigint NOT NULL,
                currency text NOT NULL,
                active boolean NOT NULL,
                document tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', name), 'A') || setweight(to_tsvector('english', description), 'B')) STORED,
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX products_document ON products USING gin (document);
            CREATE INDEX products_name_trigrams ON products USING gin (lower(name) public.gin_trgm_ops);
            CREATE INDEX products_sku ON products (sku);
            CREATE INDEX products_category_price ON products (category, price_amount);
            -- Availability per SKU as inventory last said it; a SKU never heard of counts as out of stock.
            CREATE TABLE stock (
                sku text PRIMARY KEY,
                available integer NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            """),
    ]

    public static func definition(schema: String = schema) -> WorkerDefinition {
        let tables = Tables(schema: schema)
        var handlers = HandlerRegistry()
        handlers.on(ProductUpserted.self) { event, context in
            try await upsert(event.product, tables, on: context.database)
        }
        handlers.on(ProductDeactivated.self) { event, context in
            try await context.database.query("UPDATE \(tables.products) SET active = false, updated_at = now() WHERE id = $1", [event.productID])
        }
        handlers.on(StockAdjusted.self) { event, context in
            try await setAvailable(event.sku, event.available, tables, on: context.database)
        }
        handlers.on(StockAvailabilityChanged.self) { event, context in
            try await setAvailable(event.sku, event.available, tables, on: context.database)
        }
        handlers.answer(SearchProducts.self) { query, context in
            try await search(query, tables, on: context.database)
        }
        return WorkerDefinition(service: "search", schema: schema, queues: ["search.updates", "search.queries"],
                                migrations: migrations, handlers: handlers)
    }

    static func upsert(_ product: Product, _ tables: Tables, on database: PostgresConnection) async throws {
        try await database.query("""
            INSERT INTO \(tables.products) (id, sku, name, description, category, price_amount, currency, active)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, name = excluded.name, description = excluded.description,
                category = excluded.category, price_amount = excluded.price_amount, currency = excluded.currency,
                active = excluded.active, updated_at = now()
            """, [product.id, product.sku, product.name, product.description, product.category, product.price.amount,
                  product.price.currency, product.active])
    }

    static func setAvailable(_ sku: String, _ available: Int, _ tables: Tables, on database: PostgresConnection) async throws {
        try await database.query("""
            INSERT INTO \(tables.stock) (sku, available) VALUES ($1, $2)
            ON CONFLICT (sku) DO UPDATE SET available = excluded.available, updated_at = now()
            """, [sku, available])
    }

    /// Where a page ended: the sort key of its last hit and its id.
    struct Cursor: Codable {
        var score: Double?
        var price: Int?
        var name: String?
        var id: String
    }

    static func search(_ query: SearchProducts, _ tables: Tables, on database: PostgresClient) async throws -> SearchProducts.Reply {
        let text = query.text.map { String($0.trimmingPrefix(" ")) }.flatMap { $0.isEmpty ? nil : $0 }
        let sort = query.sort ?? (text == nil ? .name : .relevance)
        let limit = query.limit ?? 20
        var binds: [any PostgresEncodable] = []
        func bind(_ value: any PostgresEncodable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        var conditions = ["p.active"]
        var score = "0::float8"
        if let text {
            let raw = bind(text.lowercased())
            // Stems match by meaning (weights: name A, description B); trigrams forgive a typo in
            // a word of the name, the kind a customer makes.
            // What is in stock comes before what is not, among matches alike.
            score = """
                (ts_rank(p.document, websearch_to_tsquery('english', \(raw))) * 2 + public.word_similarity(\(raw), lower(p.name))
                 + CASE WHEN coalesce(s.available, 0) > 0 THEN 0.1 ELSE 0 END)::float8
                """
            conditions.append("(p.document @@ websearch_to_tsquery('english', \(raw)) OR public.word_similarity(\(raw), lower(p.name)) >= 0.35)")
        }
        if let category = query.category { conditions.append("p.category = \(bind(category))") }
        if let minimum = query.minimumPrice { conditions.append("p.price_amount >= \(bind(minimum))") }
        if let maximum = query.maximumPrice { conditions.append("p.price_amount <= \(bind(maximum))") }
        if query.inStockOnly == true { conditions.append("coalesce(s.available, 0) > 0") }

        let order: String
        var after: String?
        let cursor = try query.cursor.map(decodeCursor)
        switch sort {
        case .relevance:
            order = "score DESC, p.id"
            if let cursor, let value = cursor.score { after = "(\(score) < \(bind(value)) OR (\(score) = $\(binds.count) AND p.id > \(bind(cursor.id))))" }
        case .priceAscending:
            order = "p.price_amount, p.id"
            if let cursor, let value = cursor.price { after = "(p.price_amount, p.id) > (\(bind(value)), \(bind(cursor.id)))" }
        case .priceDescending:
            order = "p.price_amount DESC, p.id"
            if let cursor, let value = cursor.price { after = "(p.price_amount < \(bind(value)) OR (p.price_amount = $\(binds.count) AND p.id > \(bind(cursor.id))))" }
        case .name:
            order = "p.name, p.id"
            if let cursor, let value = cursor.name { after = "(p.name, p.id) > (\(bind(value)), \(bind(cursor.id)))" }
        }
        if let after { conditions.append(after) }
        let rows = try await database.query("""
            SELECT p.id, p.sku, p.name, p.description, p.category, p.price_amount, p.currency, p.active,
                   coalesce(s.available, 0) > 0, \(score) AS score
            FROM \(tables.products) p LEFT JOIN \(tables.stock) s ON s.sku = p.sku
            WHERE \(conditions.joined(separator: " AND "))
            ORDER BY \(order) LIMIT \(limit + 1)
            """, binds)
        var hits: [SearchProducts.Hit] = []
        for index in 0..<min(rows.count, limit) {
            let row = rows[index]
            hits.append(SearchProducts.Hit(
                product: Product(id: try row.decode(String.self, 0), sku: try row.decode(String.self, 1), name: try row.decode(String.self, 2),
                                 description: try row.decode(String.self, 3), category: try row.decode(String.self, 4),
                                 price: Money(amount: try row.decode(Int.self, 5), currency: try row.decode(String.self, 6)),
                                 active: try row.decode(Bool.self, 7)),
                inStock: try row.decode(Bool.self, 8), score: try row.decode(Double.self, 9)))
        }
        var next: String?
        if rows.count > limit, let last = hits.last {
            next = try encodeCursor(Cursor(score: sort == .relevance ? last.score : nil,
                                           price: sort == .priceAscending || sort == .priceDescending ? last.product.price.amount : nil,
                                           name: sort == .name ? last.product.name : nil, id: last.product.id))
        }
        return SearchProducts.Reply(hits: hits, nextCursor: next)
    }

    static func encodeCursor(_ cursor: Cursor) throws -> String {
        try JSONEncoder().encode(cursor).base64EncodedString()
    }

    static func decodeCursor(_ text: String) throws -> Cursor {
        guard let data = Data(base64Encoded: text), let cursor = try? JSONDecoder().decode(Cursor.self, from: data) else {
            throw PermanentFailure("validation", "cursor is not one this service gave")
        }
        return cursor
    }

    struct Tables: Sendable {
        let products: String
        let stock: String
        init(schema: String) {
            products = "\(quoteIdentifier(schema)).products"
            stock = "\(quoteIdentifier(schema)).stock"
        }
    }
}
