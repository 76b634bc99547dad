public import Contracts
import FoundationEssentials
import Logging
public import Messaging
import Metrics
public import PostgresClient
public import Sagas

/// Orders: placing and cancelling, the customer's view of an order, and the checkout saga that
/// carries each order through stock, payment and confirmation.
public enum OrdersService {
    public static let schema = "orders"

    public static let migrations = [
        SagaTables.migration(version: 100),
        Migration(version: 110, name: "orders", sql: """
            CREATE TABLE orders (
                id text PRIMARY KEY,
                customer_id text NOT NULL,
                customer_email text NOT NULL,
                status text NOT NULL,
                status_reason text,
                total_amount bigint NOT NULL,
                currency text NOT NULL,
                shipping_address jsonb NOT NULL,
                placed_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX orders_customer ON orders (customer_id, placed_at DESC, id DESC);
            CREATE TABLE order_lines (
                order_id text NOT NULL REFERENCES orders (id),
                line integer NOT NULL,
                product_id text NOT NULL,
                sku text NOT NULL,
                name text NOT NULL,
                quantity integer NOT NULL CHECK (quantity > 0),
                unit_amount bigint NOT NULL,
                currency text NOT NULL,
                PRIMARY KEY (order_id, line)
            );
            """),
        SagaTables.withoutForeignKeys(version: 120),
        SagaTables.timeoutsInTheSagaRow(version: 130),
        // What the catalog says each product sells for (its events, and its answers when an order
        // had to ask), so that placing an order need not ask the catalog (a query and its reply
        // through the broker). A row without a price: off sale, or changed by a catalog that sent
        // no revision; either way the next order asks. `revision` is the catalog's: a product
        // applies only over an older one.
        Migration(version: 140, name: "catalog prices", sql: """
            CREATE TABLE catalog_prices (
                product_id text PRIMARY KEY,
                sku text,
                name text,
                price_amount bigint CHECK (price_amount >= 0),
                currency text,
                revision bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                CHECK ((sku IS NULL) = (price_amount IS NULL) AND (name IS NULL) = (price_amount IS NULL)
                       AND (currency IS NULL) = (price_amount IS NULL))
            );
            """),
    ]

    public static func definition(timing: Checkout.Timing = Checkout.Timing(), schema: String = schema) -> WorkerDefinition {
        let tables = Tables(schema: schema)
        let saga = SagaEngine(Checkout(timing: timing), schema: schema) { change, context in
            // The customer's view follows the saga (sent with the COMMIT), when what the customer
            // sees changes: the steps up to the commit are all "pending" (three of the five
            // transitions of a completed order), and a cancellation's reason may change within it.
            let status = change.after.orderStatus
            guard change.before.orderStatus != status || status == .cancelling || status == .cancelled else { return }
            try context.write("""
                UPDATE \(tables.orders) SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1
                """, [change.sagaID, change.after.orderStatus.rawValue,
                      change.after == .compensationFailed ? change.data.failure : change.data.cancelReason])
        }
        var handlers = HandlerRegistry()
        // A batch locks and reads its sagas' rows up front, in id order and in one round trip;
        // each input then takes its saga's row from there instead of reading it itself. A
        // PlaceOrder starts its saga (the cart names it in the envelope): no row to read, and a
        // batch of them only would pay a round trip for nothing.
        handlers.beforeBatch { messages, database in
            try await saga.lockAll(messages.filter { $0.type != PlaceOrder.type }.compactMap(\.sagaID), on: database)
        }

        handlers.on(PlaceOrder.self) { command, context in
            try await place(command, tables: tables, saga: saga, context: context)
        }
        handlers.on(CancelOrder.self) { command, context in
            if let customerID = command.customerID {
                let owner = try await context.database.query("SELECT customer_id FROM \(tables.orders) WHERE id = $1", [command.orderID])
                guard owner.count == 1, try owner[0].decode(String.self, 0) == customerID else {
                    try await context.publish(OrderCancellationRejected(orderID: command.orderID, reason: "no such order for this customer"))
                    return
                }
            }
            let reason = command.reason.isEmpty ? "cancelled" : command.reason
            let by = command.customerID == nil ? "an operator" : "the customer"
            if try await saga.handle(.cancelRequested(reason: "cancelled by \(by): \(reason)"), sagaID: command.orderID,
                                     note: command.requestedBy.map { "requested by \($0): \(reason)" }, in: context) == nil {
                try await context.publish(OrderCancellationRejected(orderID: command.orderID, reason: "no such order"))
            }
        }
        handlers.on(RetryOrderSaga.self) { command, context in
            let note = command.requestedBy.map { "requested by \($0)" + (command.reason.map { ": \($0)" } ?? "") } ?? command.reason
            if try await saga.handle(.retryRequested, sagaID: command.orderID, note: note, in: context) == nil {
                throw PermanentFailure("not-found", "no saga \(command.orderID)")
            }
        }

        // What inventory and payments report back, for the saga of the order they name.
        func on<E: Event>(_ type: E.Type, order: @escaping @Sendable (E) -> String, _ input: @escaping @Sendable (E) -> Checkout.Input) {
            handlers.on(type) { event, context in
                let id = order(event)
                if try await saga.handle(input(event), sagaID: context.envelope.sagaID ?? id, in: context) == nil {
                    context.logger.warning("event for an unknown saga; ignored", metadata: ["order_id": .string(id)])
                }
            }
        }
        on(StockReserved.self, order: \.reservationID) { _ in .stockReserved }
        on(StockReservationFailed.self, order: \.reservationID) { .stockUnavailable(reason: $0.reason) }
        on(ReservationCommitted.self, order: \.reservationID) { _ in .reservationCommitted }
        on(ReservationCommitFailed.self, order: \.reservationID) { .reservationCommitFailed(reason: $0.reason) }
        on(ReservationReleased.self, order: \.reservationID) { _ in .reservationReleased }
        on(PaymentAuthorized.self, order: \.orderID) { _ in .paymentAuthorized }
        on(PaymentDeclined.self, order: \.orderID) { .paymentDeclined(reason: $0.message) }
        on(PaymentCaptured.self, order: \.orderID) { _ in .paymentCaptured }
        on(PaymentVoided.self, order: \.orderID) { _ in .paymentVoided }
        on(PaymentOperationFailed.self, order: \.orderID) { .paymentFailed(operation: $0.operation, reason: $0.reason) }

        handlers.answer(GetOrder.self) { query, context in
            let orders = try await tables.summaries(where: "o.id = $1", [query.orderID], limit: 1, on: context.database)
            guard let order = orders.first, query.customerID == nil || query.customerID == order.customerID else { return nil }
            return order
        }
        handlers.answer(ListCustomerOrders.self) { query, context in
            let limit = min(max(query.limit, 1), 100)
            if let before = query.before {
                return try await tables.summaries(
                    where: "o.customer_id = $1 AND (o.placed_at, o.id) < (SELECT placed_at, id FROM \(tables.orders) WHERE id = $2)",
                    [query.customerID, before], limit: limit, on: context.database)
            }
            return try await tables.summaries(where: "o.customer_id = $1", [query.customerID], limit: limit, on: context.database)
        }

        // The catalog's changes, into the local prices (`catalog_prices`).
        handlers.on(ProductUpserted.self) { event, context in
            let product = event.product
            try await tables.copy(product.active ? product : nil, id: product.id, revision: product.revision, on: context.database)
        }
        handlers.on(ProductDeactivated.self) { event, context in
            try await tables.copy(nil, id: event.productID, revision: event.revision, on: context.database)
        }

        SagaOperations.add(to: &handlers, schema: schema)

        let timeouts = ScheduledJob("fire-saga-timeouts", every: .milliseconds(500)) { job in
            let fired = try await saga.fireDueTimeouts(job)
            if fired > 0 { job.logger.info("fired saga timeouts", metadata: ["count": .stringConvertible(fired)]) }
        }
        return WorkerDefinition(service: "orders", schema: schema,
                                queues: ["orders.commands", "orders.queries", "orders.saga-events", "orders.catalog-events"],
                                migrations: migrations, handlers: handlers, jobs: [timeouts])
    }

    /// Prices the lines from the catalog, records the order and starts its saga. An order whose
    /// products are unknown or off sale is recorded as cancelled, with the reason.
    ///
    /// The prices come from the local copy of the catalog (`catalog_prices`) when it has every
    /// product on sale; otherwise (a product it has not heard of, one off sale, whose reason the
    /// catalog words) from the catalog itself, over request/reply, and its answer goes into the copy.
    static func place(_ command: PlaceOrder, tables: Tables, saga: SagaEngine<Checkout>, context: HandlerContext) async throws {
        let exists = try await context.database.query("SELECT 1 FROM \(tables.orders) WHERE id = $1", [command.orderID])
        if exists.count > 0 {
            context.logger.info("order already placed; nothing to do", metadata: ["order_id": .string(command.orderID)])
            return
        }
        let ids = command.lines.map(\.productID)
        let products: [Product]
        if let known = try await tables.onSale(ids, on: context.database) {
            products = known
        } else {
            // The transaction (in batches: the batch's) holds its connection while the catalog
            // answers, up to the ask's 5 s: docs/checkout.md, "Prices", says when this happens.
            Counter(label: "shopfleet_orders_catalog_asks_total").increment()
            products = try await context.ask(GetProducts(productIDs: ids))
            for product in products { try await tables.remember(product, on: context.database) }
        }
        let byID = Dictionary(products.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var lines: [OrderLine] = []
        var problems: [String] = []
        for line in command.lines {
            guard let product = byID[line.productID] else {
                problems.append("unknown product \(line.productID)")
                continue
            }
            guard product.active else {
                problems.append("\(product.name) (\(product.id)) is no longer sold")
                continue
            }
            lines.append(OrderLine(productID: product.id, sku: product.sku, name: product.name, quantity: line.quantity, unitPrice: product.price))
        }
        let currencies = Set(lines.map(\.unitPrice.currency))
        if currencies.count > 1 { problems.append("the products are priced in different currencies (\(currencies.sorted().joined(separator: ", ")))") }
        let total = Money(amount: lines.reduce(0) { $0 + $1.quantity * $1.unitPrice.amount }, currency: currencies.first ?? "EUR")

        let now = Date()
        let data = Checkout.Data(orderID: command.orderID, customerID: command.customerID, customerEmail: command.customerEmail,
                                 lines: lines, total: total, paymentMethod: command.paymentMethod, placedAt: now)
        let rejected = problems.isEmpty ? nil : problems.joined(separator: "; ")
        // The order and its lines go with the saga's first statement: no round trip of their own.
        try context.write("""
            INSERT INTO \(tables.orders) (id, customer_id, customer_email, status, status_reason, total_amount, currency, shipping_address, placed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """, [command.orderID, command.customerID, command.customerEmail,
                  (rejected == nil ? OrderStatus.pending : .cancelled).rawValue, rejected, total.amount, total.currency,
                  PostgresJSON(command.shippingAddress), now])
        for (index, line) in lines.enumerated() {
            try context.write("""
                INSERT INTO \(tables.lines) (order_id, line, product_id, sku, name, quantity, unit_amount, currency)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                """, [command.orderID, index + 1, line.productID, line.sku, line.name, line.quantity, line.unitPrice.amount,
                      line.unitPrice.currency])
        }
        if let rejected {
            var data = data
            data.cancelReason = rejected
            try await context.publish(OrderCancelled(order: Checkout.summary(data, status: .cancelled, reason: rejected), reason: rejected),
                                      sagaID: command.orderID)
            return
        }
        try await saga.start(id: command.orderID, data: data, input: .place, in: context)
    }

    struct Tables: Sendable {
        let orders: String
        let lines: String
        let prices: String
        init(schema: String) {
            orders = "\(quoteIdentifier(schema)).orders"
            lines = "\(quoteIdentifier(schema)).order_lines"
            prices = "\(quoteIdentifier(schema)).catalog_prices"
        }

        /// Records what a catalog event says about a product: its price (`product`), or that it is
        /// off sale (nil), unless the copy holds this revision or a later one. Without a revision
        /// (a catalog from before revisions, during a rolling upgrade) the change cannot be placed
        /// among the others: the price is dropped, the revision kept, and the next order for the
        /// product asks the catalog.
        func copy(_ product: Product?, id: String, revision: Int?, on database: PostgresConnection) async throws {
            guard let revision else {
                try await database.query("""
                    INSERT INTO \(prices) (product_id, revision) VALUES ($1, 0)
                    ON CONFLICT (product_id) DO UPDATE SET sku = NULL, name = NULL, price_amount = NULL, currency = NULL, updated_at = now()
                    """, [id])
                return
            }
            try await database.query("""
                INSERT INTO \(prices) AS p (product_id, sku, name, price_amount, currency, revision) VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (product_id) DO UPDATE SET sku = excluded.sku, name = excluded.name, price_amount = excluded.price_amount,
                    currency = excluded.currency, revision = excluded.revision, updated_at = now()
                WHERE p.revision < excluded.revision
                """, [id, product?.sku, product?.name, product?.price.amount, product?.price.currency, revision])
        }

        /// Records what the catalog answered about a product (read just now, so current): over an
        /// older revision, and at the same revision over a price an event without a revision had
        /// dropped. Written only where it changes something, so that an answer about a product
        /// off sale, asked for by order after order, locks no row (`ON CONFLICT … DO UPDATE`
        /// would lock it even when it changes nothing, until the transaction ends). An answer
        /// without a revision (a catalog from before them) cannot be placed among the events: the
        /// copy is left as it is.
        func remember(_ product: Product, on database: PostgresConnection) async throws {
            guard let revision = product.revision else { return }
            let onSale = product.active
            let binds: [any PostgresEncodable] = [product.id, onSale ? product.sku : nil, onSale ? product.name : nil,
                                                  onSale ? product.price.amount : nil, onSale ? product.price.currency : nil, revision]
            let updated = try await database.query("""
                UPDATE \(prices) SET sku = $2, name = $3, price_amount = $4, currency = $5, revision = $6, updated_at = now()
                WHERE product_id = $1 AND (revision < $6 OR (revision = $6 AND price_amount IS NULL AND $4::bigint IS NOT NULL))
                RETURNING 1
                """, binds)
            guard updated.count == 0 else { return }
            try await database.query("""
                INSERT INTO \(prices) (product_id, sku, name, price_amount, currency, revision) VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (product_id) DO NOTHING
                """, binds)
        }

        /// The products as the copy has them, when it has every one of them on sale; nil otherwise.
        func onSale(_ ids: [String], on database: PostgresConnection) async throws -> [Product]? {
            let rows = try await database.query("""
                SELECT product_id, sku, name, price_amount, currency FROM \(prices) WHERE product_id = ANY($1) AND price_amount IS NOT NULL
                """, [ids])
            let products = try (0..<rows.count).map { index in
                let row = rows[index]
                return Product(id: try row.decode(String.self, 0), sku: try row.decode(String.self, 1), name: try row.decode(String.self, 2),
                               description: "", category: "",
                               price: Money(amount: try row.decode(Int.self, 3), currency: try row.decode(String.self, 4)))
            }
            return Set(products.map(\.id)) == Set(ids) ? products : nil
        }

        func summaries(where condition: String, _ binds: [any PostgresEncodable], limit: Int,
                       on database: PostgresClient) async throws -> [OrderSummary] {
            let rows = try await database.query("""
                SELECT o.id, o.customer_id, o.customer_email, o.status, o.status_reason, o.total_amount, o.currency, o.placed_at, o.updated_at,
                    coalesce((SELECT json_agg(json_build_object('productID', l.product_id, 'sku', l.sku, 'name', l.name, 'quantity', l.quantity,
                                'unitPrice', json_build_object('amount', l.unit_amount, 'currency', l.currency)) ORDER BY l.line)
                              FROM \(lines) l WHERE l.order_id = o.id), '[]')::text
                FROM \(orders) o WHERE \(condition) ORDER BY o.placed_at DESC, o.id DESC LIMIT \(limit)
                """, binds)
            return try (0..<rows.count).map { index in
                let row = rows[index]
                let lines = try JSONDecoder().decode([OrderLine].self, from: Data(try row.decode(String.self, 9).utf8))
                return OrderSummary(orderID: try row.decode(String.self, 0), customerID: try row.decode(String.self, 1),
                                    customerEmail: try row.decode(String.self, 2), status: try row.decode(String.self, 3),
                                    statusReason: try row.decode(String?.self, 4), lines: lines,
                                    total: Money(amount: try row.decode(Int.self, 5), currency: try row.decode(String.self, 6)),
                                    placedAt: try row.decode(Date.self, 7).formatted(.iso8601),
                                    updatedAt: try row.decode(Date.self, 8).formatted(.iso8601))
            }
        }
    }
}
