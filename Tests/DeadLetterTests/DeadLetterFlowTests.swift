import Contracts
import AMQPClient
import ClientRuntime
import DeadLetters
import FixtureWorker
import FoundationEssentials
import Messaging
import PostgresClient
import ShopfleetTesting
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The deadletters worker and `shopfleet dlq` against real RabbitMQ and PostgreSQL, with the
/// fixture worker failing in every way a message can.
@Suite("dead letters", .serialized)
struct DeadLetterFlowTests {
    struct Group: Decodable { var fingerprint: String; var count: Int; var errorType: String; var failedQueue: String; var sampleError: String }
    struct Line: Decodable { var id: String; var outcome: String; var queue: String; var detail: String?; var at: String }

    @Test func everyWayOfFailingLandsInTheStoreWithItsReason() async throws {
        try await DeadLetterFleet.with { fleet in
            let failing = try await fleet.send(Fail(key: "always"))
            let invalid = try await fleet.send(Strict(key: "strict", quantity: 0))
            var garbled = try Envelope(Work(key: "garbled"))
            garbled.body = Array("{not json".utf8)
            try await fleet.channel.publish(garbled.body, routingKey: Work.queue, properties: garbled.properties, mandatory: true)
            let unknown = Envelope(type: "fixture.NoSuchThing.v1", body: Array("{}".utf8))
            try await fleet.channel.publish(unknown.body, routingKey: Work.queue, properties: unknown.properties, mandatory: true)
            var untyped = try Envelope(Work(key: "untyped")).properties
            untyped.type = nil
            try await fleet.channel.publish(Array(#"{"key":"untyped"}"#.utf8), routingKey: Work.queue, properties: untyped, mandatory: true)

            let exhausted = try await fleet.waitForLetter(failing.messageID)
            #expect(exhausted.errorType == "retries-exhausted")
            #expect(exhausted.reason == "boom for always")
            #expect(exhausted.failedQueue == "fixture.commands")
            #expect(exhausted.attempts == 3)  // the first try and two retry tiers
            #expect(exhausted.exchange == "" && exhausted.routingKey == "fixture.commands")
            #expect(exhausted.status == "waiting")

            #expect(try await fleet.waitForLetter(invalid.messageID).errorType == "validation")
            let undecodable = try await fleet.waitForLetter(garbled.messageID)
            #expect(undecodable.errorType == "undecodable")
            #expect(undecodable.attempts == 1)
            let unknownType = try await fleet.waitForLetter(unknown.messageID)
            #expect(unknownType.errorType == "unknown-type")
            #expect(unknownType.reason.contains("fixture.NoSuchThing.v1"))
            let missingType = try await fleet.waitForLetter(untyped.messageID!)
            #expect(missingType.errorType == "missing-type")
            #expect(missingType.type == "(none)")

            // Grouped by fingerprint; shown with body, headers and history.
            let groups = try JSONDecoder().decode([Group].self, from: Data(try await fleet.shopfleet(["dlq", "groups", "--json"]).utf8))
            #expect(groups.count == 5)
            #expect(groups.contains { $0.fingerprint == exhausted.fingerprint && $0.count == 1 && $0.sampleError == "boom for always" })
            let shown = try await fleet.shopfleet(["dlq", "show", exhausted.id])
            #expect(shown.contains("\"key\" : \"always\""))
            #expect(shown.contains("x-error-type: \"retries-exhausted\""))
            #expect(shown.contains("failed (retries-exhausted)"))
            let listed = try await fleet.shopfleet(["dlq", "list", "--type", Fail.type])
            #expect(listed.contains(exhausted.id) && !listed.contains(undecodable.id))

            // Metrics: stored per queue and type; the waiting gauges (refreshed every 10 s).
            #expect(try await fleet.metric("deadletters", "shopfleet_dead_letters_stored_total", containing: "type=\"fixture.Fail.v1\"") == 1)
            try await waitUntil(deadline: .seconds(25)) {
                (try? await fleet.metric("deadletters", "shopfleet_dead_letters_waiting", containing: "queue=\"fixture.commands\"")) == 5
            }
            #expect(try await fleet.metric("deadletters", "shopfleet_dead_letters_oldest_waiting_seconds") > 0)
        }
    }

    /// A message that kills its worker every time: the broker dead-letters it after the delivery
    /// limit (3 in the fixture topology), and the store says so.
    @Test func aWorkerKilledOnAMessageAgainAndAgainEndsInTheStoreByTheDeliveryLimit() async throws {
        try await DeadLetterFleet.with { fleet in
            let poison = try await fleet.send(Crash(key: "poison"))
            var restarts = 0
            try await waitUntil(deadline: .seconds(120)) {
                if let process = fleet.process("fixture"), process.poll() != nil {
                    restarts += 1
                    try fleet.start("fixture")
                }
                return (try? await DeadLetterReader(database: fleet.database).letters({
                    var filter = DeadLetterFilter()
                    filter.statuses = []
                    return filter
                }()))?.contains { $0.messageID == poison.messageID } == true
            }
            #expect(restarts >= 1)
            let letter = try await fleet.waitForLetter(poison.messageID)
            #expect(letter.errorType == "delivery-limit")
            #expect(letter.failedQueue == "fixture.commands")
            #expect(letter.attempts == 4)
            #expect(letter.reason.contains("delivery limit of fixture.commands"))
            let shown = try await fleet.shopfleet(["dlq", "show", letter.id])
            #expect(shown.contains("x-death"))
        }
    }

    @Test func theSameDeadLetterDeliveredTwiceIsStoredOnce() async throws {
        try await DeadLetterFleet.with { fleet in
            let envelope = try Envelope(Work(key: "twice"))
            var properties = envelope.properties
            properties.headers?[Envelope.Header.error] = "boom"
            properties.headers?[Envelope.Header.errorType] = "retries-exhausted"
            properties.headers?[Envelope.Header.failedQueue] = "fixture.commands"
            properties.headers?[Envelope.Header.failedAt] = "2026-11-25T04:00:00.123Z"
            let exchange = fleet.sandbox.topology.deadLetterExchange
            for _ in 0..<2 {
                try await fleet.channel.publish(envelope.body, exchange: exchange, routingKey: "fixture.commands", properties: properties, mandatory: true)
            }
            // What the dead-letter queue's redelivery adds is not a new failure either.
            var redelivered = properties
            redelivered.headers?["x-delivery-count"] = 1
            try await fleet.channel.publish(envelope.body, exchange: exchange, routingKey: "fixture.commands", properties: redelivered, mandatory: true)
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("deadletters", "shopfleet_messages_acked_total")) == 3
            }
            let letters = try await fleet.letters().filter { $0.messageID == envelope.messageID }
            #expect(letters.count == 1)
            #expect(letters.first?.failures == 1)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history") == 1)

            // A new failure of the same message (it failed again) is one letter with two failures.
            properties.headers?[Envelope.Header.failedAt] = "2026-11-25T04:05:00.456Z"
            try await fleet.channel.publish(envelope.body, exchange: exchange, routingKey: "fixture.commands", properties: properties, mandatory: true)
            let again = try await fleet.waitForLetter(envelope.messageID) { $0.failures == 2 }
            #expect(again.firstFailedAt < again.lastFailedAt)
            #expect(try await fleet.letters().count == 1)

            // A NUL (which PostgreSQL text cannot hold) in the error does not keep a letter out.
            let odd = try Envelope(Work(key: "odd"))
            var oddProperties = odd.properties
            oddProperties.headers?[Envelope.Header.error] = "bad\u{0}byte"
            oddProperties.headers?[Envelope.Header.failedQueue] = "fixture.commands"
            try await fleet.channel.publish(odd.body, exchange: exchange, routingKey: "fixture.commands", properties: oddProperties, mandatory: true)
            #expect(try await fleet.waitForLetter(odd.messageID).reason == "bad\u{FFFD}byte")
        }
    }

    @Test func aReplayAfterTheFixIsProcessedOnceAndMarkedAndADryRunSendsNothing() async throws {
        try await DeadLetterFleet.with { fleet in
            try await fleet.database.query("INSERT INTO fixture.broken (key) VALUES ('flaky')")
            let sent = try await fleet.send(Flaky(key: "flaky"))
            let letter = try await fleet.waitForLetter(sent.messageID)
            #expect(letter.reason == "flaky is broken")

            // The cause is fixed. With the fixture worker stopped, a dry run leaves the queue empty.
            try await fleet.database.query("DELETE FROM fixture.broken")
            fleet.process("fixture")?.signal(SIGTERM)
            _ = await fleet.process("fixture")?.wait()
            let dry = try await fleet.shopfleet(["dlq", "replay", letter.id, "--dry-run"])
            #expect(dry.contains(letter.id) && dry.contains("nothing was sent"))
            #expect(try await fleet.channel.declareQueue("fixture.commands", passive: true).messageCount == 0)
            #expect(try await fleet.letters().first?.status == "waiting")

            try fleet.start("fixture")
            try await fleet.waitReady("fixture")
            let replayed = try await fleet.shopfleet(["dlq", "replay", letter.id])
            #expect(replayed.contains("replayed 1, skipped 0, failed 0"))
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.effects("flaky").count) == 1 }
            // The same message, by its id, handled once.
            #expect(try await fleet.effects("flaky") == [sent.messageID])
            let marked = try #require(try await fleet.letters().first)
            #expect(marked.status == "replayed" && marked.replays == 1)

            // Not replayed twice by accident.
            let twice = try await fleet.shopfleet(["dlq", "replay", letter.id])
            #expect(twice.contains("already replayed"))
            #expect(try await fleet.letters().first?.replays == 1)
            let shown = try await fleet.shopfleet(["dlq", "show", letter.id])
            #expect(shown.contains("sent back to fixture.commands"))
        }
    }

    @Test func aDiscardedLetterIsKeptWithItsReasonAndNotReplayed() async throws {
        try await DeadLetterFleet.with { fleet in
            let sent = try await fleet.send(Strict(key: "bad", quantity: 1000))
            let letter = try await fleet.waitForLetter(sent.messageID)
            let discarded = try await fleet.shopfleet(["dlq", "discard", letter.id, "--reason", "test data, not a real order"])
            #expect(discarded.contains("discarded 1 letter"))
            let kept = try #require(try await fleet.letters().first)
            #expect(kept.status == "discarded" && kept.statusNote == "test data, not a real order")
            #expect(!(try await fleet.shopfleet(["dlq", "list"])).contains(letter.id))
            #expect(try await fleet.shopfleet(["dlq", "replay", letter.id]).contains("already discarded"))
            // A letter whose queue is gone cannot be replayed: it says so, exits 1, and stays waiting.
            let orphan = try Envelope(Work(key: "orphan"))
            var properties = orphan.properties
            properties.headers?[Envelope.Header.error] = "boom"
            properties.headers?[Envelope.Header.failedQueue] = "fixture.no-such-queue"
            try await fleet.channel.publish(orphan.body, exchange: fleet.sandbox.topology.deadLetterExchange, routingKey: "x",
                                            properties: properties, mandatory: true)
            let stranded = try await fleet.waitForLetter(orphan.messageID)
            let attempt = try await ChildProcess.run([DeadLetterFleet.directory + "/shopfleet", "dlq", "replay", stranded.id],
                                                     extraEnvironment: fleet.environment)
            #expect(attempt.status == 1)
            #expect(attempt.output.contains("failed \(stranded.id)"))
            #expect(try await fleet.waitForLetter(orphan.messageID).status == "waiting")

            // A replay or discard of everything must be asked for.
            let refused = try await ChildProcess.run([DeadLetterFleet.directory + "/shopfleet", "dlq", "replay"], extraEnvironment: fleet.environment)
            #expect(refused.status != 0)
        }
    }

    /// Hundreds of letters replayed at 100/s: every one arrives and is handled once, and no
    /// second holds more than the rate.
    @Test func replayingHundredsAtARateLosesNoneAndNeverGoesFaster() async throws {
        try await DeadLetterFleet.with { fleet in
            let count = 300
            let rate = 100.0
            let exchange = fleet.sandbox.topology.deadLetterExchange
            let publishing = ContinuousClock.now
            let ids = try await fleet.publishExhaustedLetters(count, key: "bulk", exchange: exchange) { "database of item \($0) was read-only" }
            try await waitUntil(deadline: .seconds(60)) {
                (try? await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'waiting'")) == count
            }
            print("\(count) letters published and stored in \(ContinuousClock.now - publishing)")
            let groups = try JSONDecoder().decode([Group].self, from: Data(try await fleet.shopfleet(["dlq", "groups", "--json"]).utf8))
            #expect(groups.count == 1)
            let fingerprint = try #require(groups.first?.fingerprint)

            let started = ContinuousClock.now
            let output = try await fleet.shopfleet(["dlq", "replay", "--fingerprint", fingerprint, "--rate", "\(Int(rate))", "--json"])
            let elapsed = ContinuousClock.now - started
            let lines = try JSONDecoder().decode([Line].self, from: Data(output.utf8))
            #expect(lines.count == count)
            #expect(lines.allSatisfy { $0.outcome == "replayed" })
            #expect(elapsed >= .milliseconds(Int64(Double(count - 1) / rate * 1000)))
            let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
            let times = try lines.map { try style.parse($0.at).timeIntervalSince1970 }.sorted()
            // No second holds more than the rate.
            var most = 0
            var low = 0
            for high in times.indices {
                while times[high] - times[low] >= 1 { low += 1 }
                most = max(most, high - low + 1)
            }
            #expect(most <= Int(rate))
            print("replayed \(count) at --rate \(Int(rate)) in \(elapsed) (CLI start to exit); busiest second: \(most) sends")

            try await waitUntil(deadline: .seconds(60)) { (try? await fleet.effects("bulk").count) == count }
            #expect(Set(try await fleet.effects("bulk")) == ids)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'replayed' AND replays = 1") == count)
        }
    }

    /// A letter the store refuses every time (here: a failed-queue name too long for the store's
    /// index) goes back to the dead-letter queue only so often: after the queue's delivery limit
    /// the broker moves it to the unstored queue, where an operator finds it, instead of it going
    /// round for ever.
    @Test func aLetterTheStoreCannotTakeEndsInTheUnstoredQueue() async throws {
        try await DeadLetterFleet.with { fleet in
            let topology = fleet.sandbox.topology
            let long = String((0..<20_000).map { _ in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".randomElement()! })
            var properties = try Envelope(Work(key: "unstorable")).properties
            properties.headers?[Envelope.Header.failedQueue] = .string(long)
            properties.headers?[Envelope.Header.error] = .string("boom")
            try await fleet.channel.publish(Array(#"{"key":"unstorable"}"#.utf8), exchange: topology.deadLetterExchange, routingKey: "fixture.commands",
                                            properties: properties)
            let box = DeliveryBox()
            try await waitUntil(deadline: .seconds(60)) {
                if let delivery = try? await fleet.channel.get(queue: topology.unstoredQueue, noAck: true) {
                    box.set(delivery)
                    return true
                }
                return false
            }
            let parked = try #require(box.get())
            #expect(parked.properties.messageID == properties.messageID)
            #expect("\(String(describing: parked.properties.headers?["x-death"]))".contains("delivery_limit"))
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.letters WHERE message_id = $1", [properties.messageID!]) == 0)
            // And the dead-letter queue goes on: the next letter is stored.
            let failing = try await fleet.send(Fail(key: "after"))
            #expect(try await fleet.waitForLetter(failing.messageID).errorType == "retries-exhausted")
        }
    }
}

final class DeliveryBox: Sendable {
    private let value = Mutex<AMQPDelivery?>(nil)
    func set(_ delivery: AMQPDelivery) { value.withLock { $0 = delivery } }
    func get() -> AMQPDelivery? { value.withLock { $0 } }
}
