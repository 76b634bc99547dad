import AMQPClient
import ClientRuntime
import FixtureWorker
import FoundationEssentials
@testable import Messaging
import PostgresClient
import ShopfleetTesting
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The worker runtime, run as its own process (the fixture worker) against real RabbitMQ and
/// PostgreSQL. Every wait has a deadline.
@Suite("Worker runtime", .serialized)
struct WorkerTests {
    @Test func handlesAMessageOnceAndPublishesWhatItSent() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key, downstream: true, event: true))
            try await fleet.waitForCount("effects", key: key, toBe: 1)
            try await fleet.waitForCount("downstream_effects", key: key, toBe: 1)
            try await fleet.waitForCount("audit", key: key, toBe: 1)
            // The same message again (a redelivery, as the broker would make it) has no second
            // effect: not its row, not what it sent.
            let again = try Envelope(Work(key: key + "-dup", downstream: true, event: true))
            try await fleet.send(again, to: Work.queue)
            try await fleet.send(again, to: Work.queue)
            // Nor for a handler that only sends (its inbox row goes with the COMMIT).
            let forward = try Envelope(Forward(key: key + "-fwd"))
            try await fleet.send(forward, to: Forward.queue)
            try await fleet.send(forward, to: Forward.queue)
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.metric("shopfleet_messages_duplicate_total")) ?? 0 >= 2 }
            try await fleet.waitForCount("downstream_effects", key: key + "-fwd", toBe: 1)
            try await fleet.waitForCount("downstream_effects", key: key + "-dup", toBe: 1)
            try await fleet.waitForCount("audit", key: key + "-dup", toBe: 1)
            #expect(try await fleet.count("effects", key: key + "-dup") == 1)
            // Ops endpoints.
            #expect(try await fleet.http("/healthz").status == 200)
            #expect(try await fleet.http("/readyz").body == "ready\n")
            #expect(try await fleet.metric("shopfleet_messages_acked_total", containing: "type=\"fixture.Work.v1\"") >= 3)
            #expect(try await fleet.metric("shopfleet_handler_duration_seconds_count") >= 3)
            #expect(try await fleet.http("/metrics").body.contains("shopfleet_outbox_lag_seconds"))
            // Logs are JSON lines carrying the message's ids.
            #expect(fleet.log.contains("\"message_id\":\"\(again.messageID)\""))
            #expect(try await fleet.stop() == 0)
        }
    }

    /// Statements a handler writes with `context.write` go with the COMMIT: their rows commit with
    /// the inbox row, a redelivery has no second effect, and one the server refuses fails the
    /// message (through the retry tiers, then dead-lettered naming the error) with none of the
    /// transaction's rows left behind.
    @Test func writesSentWithTheCommitCommitTogetherOrNotAtAll() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let key = TestServers.uniqueName("d")
            let once = try Envelope(Deferred(key: key, failing: false))
            try await fleet.send(once, to: Deferred.queue)
            try await fleet.send(once, to: Deferred.queue)
            try await fleet.waitForCount("effects", key: key, toBe: 1)
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.metric("shopfleet_messages_duplicate_total")) ?? 0 >= 1 }
            #expect(try await fleet.count("effects", key: key) == 1)

            let bad = TestServers.uniqueName("d")
            let sent = try await fleet.send(Deferred(key: bad, failing: true))
            let letter = try await fleet.nextDeadLetter()
            #expect(letter.properties.messageID == sent.messageID)
            #expect(letter.header("x-error")?.contains("message_id") == true)
            #expect(letter.header("x-error")?.contains("23502") == true)
            #expect(letter.header("x-error-type") == "retries-exhausted")
            // The first write of each attempt was rolled back with the second.
            #expect(try await fleet.count("effects", key: bad) == 0)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// Group commit: messages waiting when the consumer looks share one transaction. A copy of a
    /// message in the same batch has no second effect; one handler failing rolls the batch back
    /// and every message is handled again alone, so the failing ones take their own retry path
    /// (to the dead letters) and the others commit once, with what they sent.
    @Test func aBatchCommitsOnceAndAFailingMessageTakesItsOwnPath() async throws {
        try await FixtureFleet.with { fleet in
            // Queued before the worker starts, so that its first deliveries are a batch.
            let keys = (0..<40).map { _ in TestServers.uniqueName("b") }
            var sent: [Envelope] = []
            for (index, key) in keys.enumerated() {
                sent.append(try await fleet.send(Work(key: key, downstream: true, event: index % 2 == 0)))
                if index == 10 { try await fleet.send(sent[3], to: Work.queue) }  // a copy, in the same batch
            }
            let bad = TestServers.uniqueName("bad")
            let failing = try await fleet.send(Deferred(key: bad, failing: true))
            let after = (0..<20).map { _ in TestServers.uniqueName("b") }
            for key in after { _ = try await fleet.send(Work(key: key, downstream: true)) }

            try await fleet.start(concurrency: 1, batch: 32)
            for key in keys + after {
                try await fleet.waitForCount("effects", key: key, toBe: 1)
                try await fleet.waitForCount("downstream_effects", key: key, toBe: 1)
            }
            for (index, key) in keys.enumerated() where index % 2 == 0 {
                try await fleet.waitForCount("audit", key: key, toBe: 1)
            }
            let letter = try await fleet.nextDeadLetter()
            #expect(letter.properties.messageID == failing.messageID)
            #expect(letter.header("x-error")?.contains("23502") == true)
            #expect(try await fleet.count("effects", key: bad) == 0)
            #expect(try await fleet.count("effects", key: keys[3]) == 1)
            #expect(try await fleet.metric("shopfleet_messages_duplicate_total") >= 1)
            // Batches happened (fewer transactions than messages), and the failing one sent its
            // batch back to one-at-a-time.
            let batched = try await fleet.metric("shopfleet_batched_messages_total")
            let batches = try await fleet.metric("shopfleet_batches_total")
            #expect(batched > batches && batches > 0)
            #expect(try await fleet.metric("shopfleet_batch_fallbacks_total") >= 1)
            // Nothing was lost to the batches and nothing sent twice: every outbox row was confirmed
            // by the broker and deleted, the queues they went to are drained, and exactly the 60
            // Downstream and 20 WorkDone arrived (a copy under a new id would be a second row).
            try await waitUntil(deadline: .seconds(20)) {
                let rows = try? await fleet.database.query("SELECT count(*) FROM \(quoteIdentifier(fleet.schema)).outbox")
                return (try? rows?[0].decode(Int.self, 0)) == 0
            }
            try await waitUntil(deadline: .seconds(20)) {
                let downstream = try? await fleet.channel.declareQueue(Downstream.queue, passive: true).messageCount
                let audit = try? await fleet.channel.declareQueue("fixture.audit", passive: true).messageCount
                return downstream == 0 && audit == 0
            }
            let arrived = try await fleet.database.query("""
                SELECT (SELECT count(*) FROM \(quoteIdentifier(fleet.schema)).downstream_effects WHERE key = ANY($1)),
                       (SELECT count(*) FROM \(quoteIdentifier(fleet.schema)).audit WHERE key = ANY($1))
                """, [keys + after])
            #expect(try arrived[0].decode(Int.self, 0) == 60)
            #expect(try arrived[0].decode(Int.self, 1) == 20)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// Killed after its transaction committed, before it published or acked: the broker
    /// redelivers, the inbox turns the redelivery into a no-op, and the relay publishes the outbox
    /// rows the crash left behind. Each effect happens once.
    @Test func killedBetweenCommitAndPublish() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.startToCrash(at: "after-commit")
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key, downstream: true))
            #expect(try await fleet.exited() == 128 + SIGKILL)
            #expect(try await fleet.count("effects", key: key) == 1)
            #expect(try await fleet.count("downstream_effects", key: key) == 0)

            try await fleet.start()
            try await fleet.waitForCount("downstream_effects", key: key, toBe: 1)
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.metric("shopfleet_messages_duplicate_total")) ?? 0 >= 1 }
            #expect(try await fleet.metric("shopfleet_outbox_relayed_total") >= 1)
            #expect(try await fleet.count("effects", key: key) == 1)
            #expect(try await fleet.count("downstream_effects", key: key) == 1)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// A request whose worker died after its commit, before it answered: the broker delivers it
    /// again (to the next worker) while its caller still waits, and the caller gets the first
    /// handling's answer — not a refusal as a duplicate, and not a second effect.
    @Test func aRequestDeliveredAgainAfterItsCommitGetsTheFirstAnswer() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.startToCrash(at: "request-after-commit")
            let key = TestServers.uniqueName("stamp")
            let queries = try await QueryClient(connection: fleet.amqp)
            async let answer = queries.ask(Stamp(key: key), timeout: .seconds(30))
            #expect(try await fleet.exited() == 128 + SIGKILL)
            try await fleet.start()
            #expect(try await answer == Stamp.Reply(count: 1))
            #expect(try await fleet.count("effects", key: key) == 1)
            try await queries.close()
        }
    }

    /// Killed after the ack, before the outbox rows went out: the relay publishes the rows after the
    /// restart. (The ack may or may not have left the process before the kill; if not, the
    /// redelivery is a duplicate.) Each effect happens once.
    @Test func killedBetweenAckAndPublish() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.startToCrash(at: "after-ack")
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key, downstream: true))
            #expect(try await fleet.exited() == 128 + SIGKILL)
            #expect(try await fleet.count("effects", key: key) == 1)
            #expect(try await fleet.count("downstream_effects", key: key) == 0)

            try await fleet.start()
            try await fleet.waitForCount("downstream_effects", key: key, toBe: 1)
            #expect(try await fleet.metric("shopfleet_outbox_relayed_total") >= 1)
            #expect(try await fleet.count("effects", key: key) == 1)
            #expect(try await fleet.count("downstream_effects", key: key) == 1)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// A handler that always throws: every retry tier, then the dead-letter exchange with the error
    /// headers. The worker stays ready and handles other messages meanwhile.
    @Test func failingHandlerRetriesThroughEveryTierThenDeadLetters() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let key = TestServers.uniqueName("k")
            let sent = try await fleet.send(Fail(key: key))
            let work = TestServers.uniqueName("w")
            _ = try await fleet.send(Work(key: work))
            try await fleet.waitForCount("effects", key: work, toBe: 1)

            let letter = try await fleet.nextDeadLetter()
            #expect(letter.properties.messageID == sent.messageID)
            #expect(letter.header("x-error") == "boom for \(key)")
            #expect(letter.header("x-error-type") == "retries-exhausted")
            #expect(letter.header("x-failed-queue") == "fixture.commands")
            #expect(letter.header("x-failed-at") != nil)
            // Two tiers: attempts 1, 2 and 3.
            #expect(letter.properties.headers?["attempt"]?.int == 3)
            #expect(letter.properties.headers?["x-death"] != nil)
            #expect(try await fleet.metric("shopfleet_messages_retried_total", containing: "fixture.Fail.v1") == 2)
            #expect(try await fleet.http("/readyz").status == 200)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// What retrying cannot fix goes to the dead-letter exchange at once, with the reason.
    @Test func undecodableUnknownUntypedAndInvalidMessagesAreDeadLetteredAtOnce() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            var undecodable = try Envelope(Work(key: "x"))
            undecodable.body = Array("{\"key\": 42".utf8)
            try await fleet.send(undecodable, to: Work.queue)
            var unknown = try Envelope(Work(key: "x"))
            unknown.type = "fixture.Nope.v1"
            try await fleet.send(unknown, to: Work.queue)
            var untyped = try Envelope(Work(key: "x")).properties
            untyped.type = nil
            try await fleet.channel.publish(Array("{}".utf8), routingKey: Work.queue, properties: untyped, mandatory: true)
            let invalid = try await fleet.send(Strict(key: "x", quantity: 0))

            var reasons: [String: String] = [:]
            for _ in 0..<4 {
                let letter = try await fleet.nextDeadLetter()
                #expect(letter.properties.headers?["attempt"]?.int ?? 1 == 1)
                reasons[letter.header("x-error-type") ?? "?"] = letter.header("x-error") ?? ""
            }
            #expect(reasons["undecodable"]?.contains("not a valid fixture.Work.v1") == true)
            #expect(reasons["unknown-type"]?.contains("no handler for type 'fixture.Nope.v1'") == true)
            #expect(reasons["missing-type"] == "the message has no type property")
            #expect(reasons["validation"]?.contains("quantity must be 1 to 100, not 0") == true)
            #expect(try await fleet.count("effects", key: invalid.messageID) == 0)

            // Still healthy and working.
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key))
            try await fleet.waitForCount("effects", key: key, toBe: 1)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// SIGTERM with handlers running: they finish and are acked, and what they sent is published
    /// before the process exits; nothing is lost or redone. The handlers wait for a lock the test
    /// holds, so they are certainly in flight when the signal comes, and are let go only once the
    /// worker has stopped consuming: their outbox rows are written after the signal.
    @Test func sigtermFinishesInFlightHandlers() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start(concurrency: 4)
            let key = TestServers.uniqueName("k")
            let gate = Int.random(in: 1...Int(Int32.max))
            try await fleet.database.withConnection { gatekeeper in
                try await gatekeeper.query("SELECT pg_advisory_lock($1::bigint)", [gate])
                for _ in 0..<4 { _ = try await fleet.send(Slow(key: key, milliseconds: 0, gate: gate, downstream: true)) }
                // All four delivered (none left ready in the queue) and a handler waiting at the gate.
                try await waitUntil(deadline: .seconds(20)) {
                    let ready = try? await fleet.channel.declareQueue(Slow.queue, passive: true).messageCount
                    let waiting = try? await gatekeeper.query(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = $1::bigint AND NOT granted", [gate]
                    ).first?.decode(Int.self, 0)
                    return ready == 0 && waiting ?? 0 >= 1
                }
                fleet.signal(SIGTERM)
                // The worker says it has cancelled its consumers (a quorum queue goes on counting a
                // cancelled consumer until its unacked deliveries are settled, so the broker's
                // consumer count cannot tell).
                try await waitUntil(deadline: .seconds(20)) {
                    ((try? String(contentsOfFile: fleet.logFile, encoding: .utf8)) ?? "").contains("consumers cancelled")
                }
                #expect(try await fleet.count("effects", key: key) == 0)
                try await gatekeeper.query("SELECT pg_advisory_unlock($1::bigint)", [gate])
            }
            #expect(try await fleet.exited() == 0)
            #expect(try await fleet.count("effects", key: key) == 4)
            // Nothing left in the queue to be done again.
            let info = try await fleet.channel.declareQueue(Work.queue, passive: true)
            #expect(info.messageCount == 0)
            // The four Downstream commands were published (and wait for a consumer), their rows deleted.
            #expect(try await fleet.channel.declareQueue(Downstream.queue, passive: true).messageCount == 4)
            #expect(try await fleet.database.query(
                "SELECT count(*) FROM \(quoteIdentifier(fleet.schema)).outbox").first?.decode(Int.self, 0) == 0)
        }
    }

    /// What a handler sends carries the trace, saga and correlation of the message it handled.
    @Test func sentMessagesCarryTheTraceAndTheSaga() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let key = TestServers.uniqueName("k")
            var envelope = try Envelope(Work(key: key, downstream: true), sagaID: "saga-\(key)")
            envelope.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            try await fleet.send(envelope, to: Work.queue)
            try await fleet.waitForCount("downstream_effects", key: key, toBe: 1)
            // As the Downstream arrived through the broker (its outbox row is gone once confirmed).
            let rows = try await fleet.database.query(
                "SELECT traceparent, saga_id, correlation_id, type FROM \(quoteIdentifier(fleet.schema)).downstream_effects WHERE key = $1 AND causation_id = $2",
                [key, envelope.messageID])
            #expect(rows.count == 1)
            let traceparent = try #require(TraceParent(try rows[0].decode(String.self, 0)))
            #expect(traceparent.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
            #expect(traceparent.parentID != "00f067aa0ba902b7")
            #expect(try rows[0].decode(String.self, 1) == "saga-\(key)")
            #expect(try rows[0].decode(String.self, 2) == envelope.messageID)
            #expect(try rows[0].decode(String.self, 3) == Downstream.type)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// Two replicas on the same queues share the work; each message has its effect once.
    @Test func competingConsumersAcrossProcesses() async throws {
        var replica: RunningProcess?
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let replicaPort = TestServers.freePort()
            replica = try await fleet.startReplica(port: replicaPort)
            let prefix = TestServers.uniqueName("k")
            let keys = (0..<200).map { "\(prefix)-\($0)" }
            for key in keys { _ = try await fleet.send(Work(key: key)) }
            try await waitUntil(deadline: .seconds(60)) {
                let rows = try? await fleet.database.query(
                    "SELECT count(DISTINCT key), count(*) FROM \(quoteIdentifier(fleet.schema)).effects WHERE key LIKE $1", [prefix + "-%"])
                return (try? rows?[0].decode(Int.self, 0)) == keys.count
            }
            let rows = try await fleet.database.query(
                "SELECT count(*) FROM \(quoteIdentifier(fleet.schema)).effects WHERE key LIKE $1", [prefix + "-%"])
            #expect(try rows[0].decode(Int.self, 0) == keys.count)
            let first = try await fleet.metric("shopfleet_messages_acked_total", containing: "fixture.Work.v1")
            let second = try await fleet.metric("shopfleet_messages_acked_total", containing: "fixture.Work.v1", port: replicaPort)
            #expect(first > 0 && second > 0 && first + second >= Double(keys.count))
            replica?.signal(SIGTERM)
            #expect(await replica?.wait() == 0)
            #expect(try await fleet.stop() == 0)
        } onFailure: {
            replica?.signal(SIGKILL)
        }
    }

    @Test func queriesAreAnsweredAndALateReplyIsATimeout() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key))
            try await fleet.waitForCount("effects", key: key, toBe: 1)
            let client = try await QueryClient(connection: fleet.amqp)
            #expect(try await client.ask(CountEffects(key: key), timeout: .seconds(5)) == CountEffects.Reply(count: 1))

            #expect(try await fleet.stop() == 0)
            await #expect(throws: QueryClient.Failure.timeout(type: CountEffects.type, after: .milliseconds(300))) {
                try await client.ask(CountEffects(key: key), timeout: .milliseconds(300))
            }
            try await client.close()
        }
    }

    @Test func aWorkerRefusesToStartWhenItsQueuesAreMissing() async throws {
        let sandbox = try await BrokerSandbox.create(apply: false)
        defer { Task { await sandbox.remove() } }
        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: sandbox.amqpURL))
        await #expect(throws: MessagingError.self) {
            try await WorkerProcess.checkTopology(["fixture.commands"], topology: sandbox.topology, amqp: amqp)
        }
        do {
            try await WorkerProcess.checkTopology(["fixture.commands"], topology: sandbox.topology, amqp: amqp)
        } catch {
            #expect("\(error)".contains("does not exist on the broker: apply the topology"))
        }
        await amqp.close()
    }
}
