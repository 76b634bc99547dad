public import FoundationEssentials
public import Messaging
public import PostgresClient

/// The dead-letter store: one row per message and queue it failed on, with every failure of it
/// (a replayed message that fails again adds one), every replay and discard, in the `deadletters`
/// schema.
public enum DeadLetterStore {
    public static let schema = "deadletters"
    static let letters = "\(quoteIdentifier(schema)).letters"
    static let history = "\(quoteIdentifier(schema)).history"
    static let replayRequests = "\(quoteIdentifier(schema)).replay_requests"

    public static let migrations: [Migration] = [
        Migration(version: 100, name: "letters", sql: """
            CREATE TABLE letters (
                id text PRIMARY KEY,
                message_id text NOT NULL,
                failed_queue text NOT NULL,
                exchange text NOT NULL,
                routing_key text NOT NULL,
                type text NOT NULL,
                properties jsonb NOT NULL,
                headers jsonb NOT NULL,
                body bytea NOT NULL,
                reason text NOT NULL,
                error_type text NOT NULL,
                attempts integer NOT NULL,
                failures integer NOT NULL DEFAULT 1,
                first_failed_at timestamptz NOT NULL,
                last_failed_at timestamptz NOT NULL,
                saga_id text,
                fingerprint text NOT NULL,
                status text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'replayed', 'discarded')),
                status_changed_at timestamptz,
                status_note text,
                replays integer NOT NULL DEFAULT 0,
                stored_at timestamptz NOT NULL DEFAULT now(),
                UNIQUE (message_id, failed_queue)
            );
            CREATE INDEX letters_waiting ON letters (first_failed_at) WHERE status = 'waiting';
            CREATE INDEX letters_fingerprint ON letters (fingerprint, status);
            CREATE INDEX letters_saga ON letters (saga_id) WHERE saga_id IS NOT NULL;
            CREATE INDEX letters_last_failed ON letters (last_failed_at);

            -- What happened to each letter: every failure (delivery_key tells a duplicate delivery
            -- of one from a new one), every replay, every discard.
            CREATE TABLE history (
                seq bigserial PRIMARY KEY,
                letter_id text NOT NULL REFERENCES letters (id),
                at timestamptz NOT NULL,
                kind text NOT NULL CHECK (kind IN ('failed', 'replayed', 'discarded')),
                detail text NOT NULL,
                error_type text,
                attempts integer,
                delivery_key text,
                recorded_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE UNIQUE INDEX history_delivery ON history (letter_id, delivery_key);
            CREATE INDEX history_letter ON history (letter_id, at);
            """),
        // Replays asked for through the console run in the dead-letter worker, paced: a request
        // (its rate, when it may send next), and its letters `replaying` in order until sent.
        Migration(version: 110, name: "paced replays", sql: """
            ALTER TABLE letters DROP CONSTRAINT letters_status_check;
            ALTER TABLE letters ADD CONSTRAINT letters_status_check CHECK (status IN ('waiting', 'replaying', 'replayed', 'discarded'));
            CREATE TABLE replay_requests (
                id text PRIMARY KEY,
                interval_seconds float8 NOT NULL CHECK (interval_seconds > 0),
                next_at timestamptz NOT NULL,
                requested_by text NOT NULL,
                requested_at timestamptz NOT NULL DEFAULT now()
            );
            ALTER TABLE letters ADD COLUMN replay_request text, ADD COLUMN replay_order integer;
            CREATE INDEX letters_replaying ON letters (replay_request, replay_order) WHERE status = 'replaying';
            ALTER TABLE history DROP CONSTRAINT history_kind_check;
            ALTER TABLE history ADD CONSTRAINT history_kind_check CHECK (kind IN ('failed', 'replay-requested', 'replayed', 'discarded'));
            """),
    ]

    public enum Outcome: Sendable, Equatable {
        /// A message not seen failing on that queue before.
        case stored(id: String)
        /// A known letter failed again (after a replay, or a redelivery of it failed too).
        case failedAgain(id: String)
        /// The same dead letter delivered twice (dead lettering is at-least-once): nothing changed.
        case duplicate(id: String)
    }

    /// Stores one dead letter, inside the caller's transaction.
    public static func store(_ receipt: DeadLetterReceipt, on tx: PostgresConnection) async throws -> Outcome {
        let canonical = JSONEncoder()
        canonical.outputFormatting = [.sortedKeys]
        func json(_ value: [String: JSONValue]) throws -> String { String(decoding: try canonical.encode(value), as: UTF8.self) }
        let headers = try json(receipt.headers)
        let body = Data(receipt.body)

        // One statement finds or makes the letter and locks its row: a conflict "updates" the row
        // to itself, which takes the lock and returns the id; `xmax = 0` only for a new row.
        let row = try await tx.query("""
            INSERT INTO \(letters) (id, message_id, failed_queue, exchange, routing_key, type, properties, headers, body,
                                    reason, error_type, attempts, first_failed_at, last_failed_at, saga_id, fingerprint)
            VALUES ($1, COALESCE($2, 'sha256:' || encode(sha256(convert_to($6, 'UTF8') || '\\x00'::bytea || $9), 'hex')),
                    $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13, $13, $14,
                    left(encode(sha256(convert_to($15, 'UTF8')), 'hex'), 16))
            ON CONFLICT (message_id, failed_queue) DO UPDATE SET message_id = excluded.message_id
            RETURNING id, xmax = 0
            """, [UUIDv7.generate(), receipt.messageID, receipt.failedQueue, receipt.exchange, receipt.routingKey, receipt.type,
                  try json(receipt.properties), headers, body, receipt.reason, receipt.errorType, receipt.attempts,
                  receipt.failedAt, receipt.sagaID, receipt.fingerprintSource])
        let id = try row[0].decode(String.self, 0)
        let isNew = try row[0].decode(Bool.self, 1)
        // The dead-letter queue adds `x-delivery-count` when it delivers a letter again: not part of the failure.
        let failure = try await tx.query("""
            INSERT INTO \(history) (letter_id, at, kind, detail, error_type, attempts, delivery_key)
            VALUES ($1, $2, 'failed', $3, $4, $5, encode(sha256(convert_to(($6::jsonb - 'x-delivery-count')::text, 'UTF8') || $7), 'hex'))
            ON CONFLICT (letter_id, delivery_key) DO NOTHING
            RETURNING 1
            """, [id, receipt.failedAt, receipt.reason, receipt.errorType, receipt.attempts, headers, body])
        if isNew { return .stored(id: id) }
        if failure.count == 0 { return .duplicate(id: id) }
        // A new failure of a known letter: it is waiting again, with what the latest failure said.
        try await tx.query("""
            UPDATE \(letters) SET headers = $2::jsonb, body = $3, reason = $4, error_type = $5, attempts = $6,
                   failures = failures + 1, last_failed_at = greatest(last_failed_at, $7), status = 'waiting',
                   status_changed_at = now(), status_note = NULL, replay_request = NULL, saga_id = COALESCE(saga_id, $8),
                   fingerprint = left(encode(sha256(convert_to($9, 'UTF8')), 'hex'), 16)
            WHERE id = $1
            """, [id, headers, body, receipt.reason, receipt.errorType, receipt.attempts, receipt.failedAt, receipt.sagaID,
                  receipt.fingerprintSource])
        return .failedAgain(id: id)
    }
}
