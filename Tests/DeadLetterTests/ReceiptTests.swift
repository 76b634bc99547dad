import AMQPClient
import DeadLetters
import FoundationEssentials
import Messaging
import Testing

/// Reading a dead letter's headers, without servers.
@Suite("dead-letter receipts")
struct ReceiptTests {
    static func message(headers: AMQPTable, type: String? = "fixture.Work.v1", id: String? = "0190-msg",
                        exchange: String = "shopfleet.dead-letters", routingKey: String = "fixture.commands") -> AMQPMessage {
        AMQPMessage(body: Array(#"{"key":"k"}"#.utf8),
                    properties: AMQPProperties(contentType: "application/json", headers: headers, messageID: id, timestamp: 1_700_000_000, type: type),
                    exchange: exchange, routingKey: routingKey)
    }

    @Test func theWorkersHeadersSayWhyWhereAndWhen() {
        let receipt = DeadLetterReceipt(Self.message(headers: [
            "x-error": "boom for key-17", "x-error-type": "retries-exhausted", "x-failed-queue": "fixture.commands",
            "x-failed-at": "2026-11-25T04:00:00.250Z", "attempt": 3, "saga-id": "order-1",
            "x-original-exchange": "", "x-original-routing-key": "fixture.commands",
        ]), deliveryLimit: { _ in 5 })
        #expect(receipt.failedQueue == "fixture.commands")
        #expect(receipt.reason == "boom for key-17")
        #expect(receipt.errorType == "retries-exhausted")
        #expect(receipt.attempts == 3)
        #expect(receipt.sagaID == "order-1")
        #expect(receipt.messageID == "0190-msg")
        #expect(receipt.failedAt == Date(timeIntervalSince1970: 1_795_579_200.25))
        #expect(receipt.exchange == "" && receipt.routingKey == "fixture.commands")
    }

    @Test func aDeliveryLimitIsReadFromXDeath() {
        let receipt = DeadLetterReceipt(Self.message(headers: [
            "x-death": .array([
                .table(["queue": "fixture.commands", "reason": "delivery_limit", "count": 1, "time": .timestamp(1_795_665_600),
                        "exchange": "fixture.events", "routing-keys": .array(["fixture.Crash.v1"])]),
                .table(["queue": "fixture.retry.200ms", "reason": "expired", "count": 1, "time": .timestamp(1_795_665_590),
                        "exchange": "fixture.retry.200ms", "routing-keys": .array(["fixture.commands"])]),
            ]),
        ], type: "fixture.Crash.v1"), deliveryLimit: { $0 == "fixture.commands" ? 3 : nil })
        #expect(receipt.errorType == "delivery-limit")
        #expect(receipt.failedQueue == "fixture.commands")
        #expect(receipt.attempts == 4)
        #expect(receipt.reason.contains("delivery limit of fixture.commands"))
        #expect(receipt.failedAt == Date(timeIntervalSince1970: 1_795_665_600))
        #expect(receipt.exchange == "fixture.events" && receipt.routingKey == "fixture.Crash.v1")
    }

    @Test func aMessageWithoutIdOrTypeIsStillAReceipt() {
        let receipt = DeadLetterReceipt(Self.message(headers: [:], type: nil, id: nil), deliveryLimit: { _ in nil })
        #expect(receipt.messageID == nil)
        #expect(receipt.type == "(none)")
        #expect(receipt.errorType == "unknown")
        #expect(receipt.failedQueue == "fixture.commands")
    }

    @Test func aNulInAHeaderOrTheReasonCannotKeepALetterOutOfTheStore() {
        let receipt = DeadLetterReceipt(Self.message(headers: [
            "x-error": "bad\u{0}byte", "x-error-type": "retries-exhausted", "x-failed-queue": "fixture.commands",
            "odd\u{0}key": .table(["nested": "a\u{0}b"]),
        ]), deliveryLimit: { _ in nil })
        #expect(receipt.reason == "bad\u{FFFD}byte")
        #expect(receipt.headers["odd\u{FFFD}key"] == .object(["nested": .string("a\u{FFFD}b")]))
        #expect(receipt.headers.keys.allSatisfy { !$0.utf8.contains(0) })
    }

    @Test func fingerprintsIgnoreIdsAndNumbersButNotTheWords() {
        let a = DeadLetterReceipt.normalised("Product 'SKU-123' not found in order 0199a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b  (attempt 3)")
        let b = DeadLetterReceipt.normalised("product 'SKU-77' not found in order 0199ffff-0000-7e4f-8a9b-0c1d2e3f4a5b (attempt 12)")
        #expect(a == b)
        #expect(a == "product 'sku-<n>' not found in order <id> (attempt <n>)")
        #expect(DeadLetterReceipt.normalised("connection refused") != DeadLetterReceipt.normalised("connection reset"))
    }

    @Test func aReplayDropsTheFailureHeadersAndStartsItsAttemptsAgain() {
        let properties = ReplayMessage.properties(
            letterID: "letter-1",
            properties: ["message_id": .string("m-1"), "type": .string("fixture.Work.v1"), "content_type": .string("application/json"),
                         "timestamp": .int(1_700_000_000), "correlation_id": .string("c-1")],
            headers: ["x-error": .string("boom"), "x-error-type": .string("retries-exhausted"), "x-failed-queue": .string("q"),
                      "x-failed-at": .string("2026-11-25T04:00:00Z"), "x-death": .array([]), "x-delivery-count": .int(2),
                      "attempt": .int(3), "saga-id": .string("order-1"), "traceparent": .string("00-abc-def-01")])
        #expect(properties.messageID == "m-1")
        #expect(properties.type == "fixture.Work.v1")
        #expect(properties.correlationID == "c-1")
        #expect(properties.timestamp == 1_700_000_000)
        #expect(properties.persistent)
        #expect(properties.headers == ["attempt": 1, "saga-id": "order-1", "traceparent": "00-abc-def-01", "x-replayed-from": "letter-1"])
    }
}
