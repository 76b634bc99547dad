public import PostgresClient

/// The runtime's own tables in a service's schema: the inbox (messages already handled, for
/// deduplication) and the outbox (messages to publish, written in the handler's transaction).
///
/// They take migration versions 1 to 99 of the schema; a domain's own migrations start at 100.
public enum RuntimeMigrations {
    public static let reservedVersions = 1...99

    public static let all: [Migration] = [
        Migration(version: 1, name: "runtime_inbox_outbox", sql: """
            CREATE TABLE inbox (
                message_id text PRIMARY KEY,
                type text NOT NULL,
                queue text NOT NULL,
                processed_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX inbox_processed_at ON inbox (processed_at);

            CREATE TABLE outbox (
                id bigserial PRIMARY KEY,
                message_id text NOT NULL UNIQUE,
                type text NOT NULL,
                exchange text NOT NULL,
                routing_key text NOT NULL,
                correlation_id text,
                causation_id text,
                saga_id text,
                traceparent text,
                tracestate text,
                reply_to text,
                body bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                published_at timestamptz
            );
            CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
            CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
            """),
        // A row's age is the relay's cue that its handler died before publishing it. now() is the
        // start of the transaction: the rows of a slow transaction looked old the moment they
        // committed, and the relay published them while their handler did too. The rows are
        // inserted in the COMMIT's round trip, just before it, so the insert's own clock is within
        // a commit's time of the commit's (the relay's grace of seconds covers that).
        Migration(version: 2, name: "runtime_outbox_created_at_commit", sql: """
            ALTER TABLE outbox ALTER COLUMN created_at SET DEFAULT clock_timestamp();
            """),
        // A request's answer, kept with its inbox row: a request delivered again after its worker
        // died between the commit and the reply is answered with it.
        Migration(version: 3, name: "runtime_inbox_reply", sql: """
            ALTER TABLE inbox ADD COLUMN reply bytea;
            """),
        // Outbox rows are deleted once confirmed, found by `id` only, and their message ids are
        // generated per row (UUIDv7): the unique index on `message_id` was one more index entry
        // written per message, and guarded nothing.
        Migration(version: 4, name: "runtime_outbox_no_message_id_index", sql: """
            ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_message_id_key;
            """),
        // Since rows are deleted once confirmed, every row is unpublished (but those an earlier
        // version marked, which the prune removes): the partial index of unpublished ids held the
        // primary key's entries again, one more index entry and its WAL per message. The relay
        // walks the primary key in id order instead.
        Migration(version: 5, name: "runtime_outbox_no_unpublished_index", sql: """
            DROP INDEX IF EXISTS outbox_unpublished;
            """),
    ]

    /// The runtime's migrations followed by the domain's, checked for clashing versions.
    public static func with(_ domain: [Migration]) throws -> [Migration] {
        if let clash = domain.first(where: { reservedVersions.contains($0.version) }) {
            throw MessagingError("migration \(clash.version)_\(clash.name): versions \(reservedVersions.lowerBound) to \(reservedVersions.upperBound) belong to the runtime; number domain migrations from 100")
        }
        return all + domain
    }
}

/// A runtime error with a message that says what failed.
public struct MessagingError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
