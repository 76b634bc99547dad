public import Contracts
public import Messaging
public import PostgresClient

/// The catalog: products and their prices. Orders price their lines from here.
public enum CatalogService {
    public static let schema = "catalog"

    public static let migrations = [
        Migration(version: 100, name: "products", sql: """
            CREATE TABLE products (
                id text PRIMARY KEY,
                sku text NOT NULL UNIQUE,
                name text NOT NULL,
                description text NOT NULL,
                category text NOT NULL,
                price_amount bigint NOT NULL CHECK (price_amount >= 0),
                currency text NOT NULL,
                active boolean NOT NULL DEFAULT true,
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX products_category ON products (category) WHERE active;
            """),
        // Every change counts one up, under the row's lock, by a trigger, so that a catalog of the
        // release before (during a rolling upgrade) counts its changes too. The events and answers
        // carry it; copies kept by other services (orders' prices) apply a product only over an
        // older revision.
        Migration(version: 110, name: "product revisions", sql: """
            ALTER TABLE products ADD COLUMN revision bigint NOT NULL DEFAULT 1;
            CREATE FUNCTION count_product_revision() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.revision := OLD.revision + 1;
                RETURN NEW;
            END $$;
            CREATE TRIGGER products_revision BEFORE UPDATE ON products FOR EACH ROW EXECUTE FUNCTION count_product_revision();
            """),
    ]

    public static func definition(schema: String = schema) -> WorkerDefinition {
        let products = "\(quoteIdentifier(schema)).products"
        var handlers = HandlerRegistry()

        handlers.on(UpsertProduct.self) { command, context in
            let product = command.product
            let clash = try await context.database.query("SELECT id FROM \(products) WHERE sku = $1 AND id <> $2", [product.sku, product.id])
            if clash.count > 0 {
                throw PermanentFailure("conflict", "SKU \(product.sku) belongs to product \(try clash[0].decode(String.self, 0)), not \(product.id)")
            }
            let rows = try await context.database.query("""
                INSERT INTO \(products) (id, sku, name, description, category, price_amount, currency, active)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, name = excluded.name, description = excluded.description,
                    category = excluded.category, price_amount = excluded.price_amount, currency = excluded.currency,
                    active = excluded.active, updated_at = now()
                RETURNING revision
                """, [product.id, product.sku, product.name, product.description, product.category, product.price.amount,
                      product.price.currency, product.active])
            var published = product
            published.revision = try rows[0].decode(Int.self, 0)
            try await context.publish(ProductUpserted(product: published))
        }

        handlers.on(DeactivateProduct.self) { command, context in
            let rows = try await context.database.query(
                "UPDATE \(products) SET active = false, updated_at = now() WHERE id = $1 RETURNING sku, revision",
                [command.productID])
            guard rows.count == 1 else { throw PermanentFailure("not-found", "no product \(command.productID)") }
            try await context.publish(ProductDeactivated(productID: command.productID, sku: try rows[0].decode(String.self, 0),
                                                         revision: try rows[0].decode(Int.self, 1)))
        }

        handlers.answer(GetProduct.self) { query, context in
            try await read(ids: [query.productID], from: products, on: context.database).first
        }
        handlers.answer(GetProducts.self) { query, context in
            try await read(ids: query.productIDs, from: products, on: context.database)
        }

        return WorkerDefinition(service: "catalog", schema: schema, queues: ["catalog.commands", "catalog.queries"],
                                migrations: migrations, handlers: handlers)
    }

    static func read(ids: [String], from products: String, on database: PostgresClient) async throws -> [Product] {
        let rows = try await database.query("""
            SELECT id, sku, name, description, category, price_amount, currency, active, revision FROM \(products)
            WHERE id = ANY($1) ORDER BY id
            """, [ids])
        return try (0..<rows.count).map { index in
            let row = rows[index]
            return Product(id: try row.decode(String.self, 0), sku: try row.decode(String.self, 1), name: try row.decode(String.self, 2),
                           description: try row.decode(String.self, 3), category: try row.decode(String.self, 4),
                           price: Money(amount: try row.decode(Int.self, 5), currency: try row.decode(String.self, 6)),
                           active: try row.decode(Bool.self, 7), revision: try row.decode(Int.self, 8))
        }
    }
}
