import Contracts
import AMQPClient
import ClientRuntime
import DeadLetters
import FixtureWorker
import FoundationEssentials
import Messaging
import PostgresClient
import RabbitManagement
import ShopfleetTesting
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The deadletters worker while PostgreSQL is down, and `shopfleet dlq replay` as operators use
/// it: two at once, `--again`, `--all`, and a letter that fails again after its replay.
@Suite("Dead letters: operators and outages", .serialized)
struct DeadLetterOperatorTests {
    struct Line: Decodable { var id: String; var outcome: String; var queue: String; var detail: String?; var at: String }
    struct Shown: Decodable { var letter: DeadLetter; var history: [DeadLetterDetail.Event] }

    /// A letter that arrives while PostgreSQL is stopped is taken by the worker and held: not
    /// acked, not given back, not lost (the broker counts it unacknowledged on the dead-letter
    /// queue, readiness says why). When PostgreSQL is back it is stored once and acked.
    @Test func aLetterThatArrivesWhilePostgreSQLIsDownStaysOnTheQueueAndIsStoredOnceItIsBack() async throws {
        try await DeadLetterFleet.with { fleet in
            let envelope = try Envelope(Work(key: "outage"))
            var properties = envelope.properties
            properties.headers?[Envelope.Header.error] = "stock service timed out"
            properties.headers?[Envelope.Header.errorType] = "retries-exhausted"
            properties.headers?[Envelope.Header.failedQueue] = "fixture.commands"
            properties.headers?[Envelope.Header.failedAt] = .string(Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            try await TestServers.whileDown("postgres") {
                try await fleet.channel.publish(envelope.body, exchange: fleet.sandbox.topology.deadLetterExchange, routingKey: "fixture.commands",
                                                properties: properties, mandatory: true)
                try await waitUntil(deadline: .seconds(30)) {
                    (try? await fleet.metric("deadletters", "shopfleet_messages_consumed_total")) == 1
                }
                try await waitUntil(deadline: .seconds(30)) { await fleet.isReady("deadletters") == false }
                #expect(try await fleet.get("deadletters", "/readyz").body.contains("PostgreSQL unreachable"))
                // The broker's view (sampled every few seconds): handed out, not acknowledged.
                try await waitUntil(deadline: .seconds(30)) { (try? await Self.deadLetterQueue(fleet, "messages_unacknowledged")) == 1 }
                #expect(try await fleet.metric("deadletters", "shopfleet_messages_acked_total") == 0)
                #expect(try await fleet.metric("deadletters", "shopfleet_messages_retried_total") == 0)
                #expect(fleet.process("deadletters")?.poll() == nil)
            }
            let letter = try await fleet.waitForLetter(envelope.messageID, deadline: .seconds(60))
            #expect(letter.reason == "stock service timed out" && letter.status == "waiting" && letter.failures == 1)
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("deadletters", "shopfleet_messages_acked_total")) == 1
            }
            // Held the whole time: consumed once, never given back and delivered again.
            #expect(try await fleet.metric("deadletters", "shopfleet_messages_consumed_total") == 1)
            #expect(try await fleet.metric("deadletters", "shopfleet_dead_letters_stored_total") == 1)
            #expect(try await fleet.letters().count == 1)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history") == 1)
            try await waitUntil(deadline: .seconds(30)) { (try? await Self.deadLetterQueue(fleet, "messages")) == 0 }
            try await fleet.waitReady("deadletters")
        }
    }

    /// Two operators replay the same letters at the same time: each letter reaches its queue once
    /// (counted on the queue with nobody consuming it), is marked replayed once, and is handled
    /// once; whoever did not send a letter says why it skipped it.
    @Test func twoOperatorsReplayingTheSameLettersAtOnceSendEachOnce() async throws {
        try await DeadLetterFleet.with { fleet in
            let count = 40
            let exchange = fleet.sandbox.topology.deadLetterExchange
            let sent = try await fleet.publishExhaustedLetters(count, key: "race", exchange: exchange) { "stock service timed out on item \($0)" }
            try await waitUntil(deadline: .seconds(60)) {
                (try? await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'waiting'")) == count
            }
            let ids = try await fleet.letters().map(\.id)
            #expect(ids.count == count)
            // Nobody consumes the work queue meanwhile: what is on it is what the replays sent.
            fleet.process("fixture")?.signal(SIGTERM)
            _ = await fleet.process("fixture")?.wait()

            // Both by id, at 20/s: about two seconds each, side by side.
            async let first = fleet.shopfleet(["dlq", "replay"] + ids + ["--rate", "20", "--json"])
            async let second = fleet.shopfleet(["dlq", "replay"] + ids + ["--rate", "20", "--json"])
            let (one, two) = try await (first, second)
            let operators = try [one, two].map { try JSONDecoder().decode([Line].self, from: Data($0.utf8)) }
            #expect(operators.allSatisfy { $0.count == count })
            let lines = operators.flatMap { $0 }
            let replayed = lines.filter { $0.outcome == "replayed" }.map(\.id)
            #expect(replayed.count == count)
            #expect(Set(replayed) == Set(ids))
            let skips = lines.filter { $0.outcome != "replayed" }
            #expect(skips.allSatisfy {
                $0.outcome == "skipped" && ($0.detail?.hasPrefix("already replayed") == true || $0.detail == "another replay is sending it")
            }, "\(skips.map { "\($0.outcome): \($0.detail ?? "")" })")
            let counts = operators.map { own in own.filter { $0.outcome == "replayed" }.count }
            print("two operators: \(counts) replayed; "
                  + "\(skips.filter { $0.detail == "another replay is sending it" }.count) skips found the other one sending")

            #expect(try await fleet.channel.declareQueue("fixture.commands", passive: true).messageCount == UInt32(count))
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'replayed' AND replays = 1") == count)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history WHERE kind = 'replayed'") == count)

            try fleet.start("fixture")
            try await fleet.waitReady("fixture")
            try await waitUntil(deadline: .seconds(30)) { (try? await fleet.effects("race").count) == count }
            #expect(Set(try await fleet.effects("race")) == sent)
            #expect(try await fleet.metric("fixture", "shopfleet_messages_consumed_total", containing: "queue=\"fixture.commands\"") == Double(count))
            #expect(try await fleet.metric("fixture", "shopfleet_messages_duplicate_total") == 0)
        }
    }

    /// A replay asked for through the console (``DeadLetterOperator/requestReplay``, what the
    /// `ReplayDeadLetters` command does) is sent by the dead-letter worker's replay job, each
    /// letter once and none before its turn: six letters at 5/s take at least a second from the
    /// request to the last send, and while they wait they are `replaying`, not `waiting`. The
    /// request is made as if the job had been kept from running for an hour (its next time an hour
    /// ago): it must not catch up in a burst.
    @Test func aRequestedReplayIsSentByTheWorkerOnceEachAndNoFasterThanItsRate() async throws {
        try await DeadLetterFleet.with { fleet in
            let count = 6
            let sent = try await fleet.publishExhaustedLetters(count, key: "paced", exchange: fleet.sandbox.topology.deadLetterExchange) {
                "the gateway was down (\($0))"
            }
            try await waitUntil(deadline: .seconds(60)) {
                (try? await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'waiting'")) == count
            }
            fleet.process("fixture")?.signal(SIGTERM)
            _ = await fleet.process("fixture")?.wait()
            let ids = try await fleet.letters().map(\.id)
            let scheduled = try await fleet.database.transaction { tx in
                let scheduled = try await DeadLetterOperator.requestReplay(ids, rate: 5, again: false, requestedBy: "ops@example.com",
                                                                           request: "paced-1", on: tx)
                try await tx.query("UPDATE deadletters.replay_requests SET next_at = now() - interval '1 hour' WHERE id = 'paced-1'")
                return scheduled
            }
            #expect(Set(scheduled) == Set(ids))
            // Asked twice (a console clicked twice): the letters are replaying already, nothing more is scheduled.
            let twice = try await fleet.database.transaction { tx in
                try await DeadLetterOperator.requestReplay(ids, rate: 5, again: false, requestedBy: "ops@example.com", request: "paced-2", on: tx)
            }
            #expect(twice.isEmpty)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.replay_requests WHERE id = 'paced-2'") == 0)
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM deadletters.letters WHERE status = 'replayed'")) == count
            }
            #expect(try await fleet.channel.declareQueue("fixture.commands", passive: true).messageCount == UInt32(count))
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history WHERE kind = 'replayed'") == count)
            let span = try await fleet.database.query("""
                SELECT extract(epoch FROM (SELECT max(at) FROM deadletters.history WHERE kind = 'replayed')
                                        - (SELECT min(at) FROM deadletters.history WHERE kind = 'replay-requested'))::float8
                """)
            let seconds = try span[0].decode(Double.self, 0)
            #expect(seconds >= 1.0, "six letters at 5/s were all sent \(seconds) s after the request")
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history WHERE kind = 'replay-requested' AND detail LIKE '%ops@example.com%'") == count)
            // The request is gone once its letters are.
            try await waitUntil(deadline: .seconds(10)) {
                (try? await fleet.count("SELECT count(*) FROM deadletters.replay_requests")) == 0
            }
            try fleet.start("fixture")
            try await fleet.waitReady("fixture")
            try await waitUntil(deadline: .seconds(30)) { (try? await fleet.effects("paced").count) == count }
            #expect(Set(try await fleet.effects("paced")) == sent)
        }
    }

    /// `--all` takes the waiting letters only (not replayed, not discarded ones); `--again` adds
    /// the replayed ones and sends a replayed letter once more (its worker's inbox drops it),
    /// never a discarded one. A letter that fails again after its replay is waiting again with
    /// the newest reason, error type and fingerprint; the old reason stays in its history.
    @Test func againAndAllReplayWhatTheySayAndALetterThatFailsAgainWaitsWithTheNewestReason() async throws {
        try await DeadLetterFleet.with { fleet in
            let exchange = fleet.sandbox.topology.deadLetterExchange
            let anHourAgo = Date(timeIntervalSinceNow: -3600).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            // A failure as a worker reports it: `command` on fixture.commands, an hour ago, for `reason`.
            func deadLetter<C: Command>(_ command: C, reason: String) async throws -> DeadLetter {
                let envelope = try Envelope(command)
                var properties = envelope.properties
                properties.headers?[Envelope.Header.error] = .string(reason)
                properties.headers?[Envelope.Header.errorType] = "retries-exhausted"
                properties.headers?[Envelope.Header.failedQueue] = "fixture.commands"
                properties.headers?[Envelope.Header.failedAt] = .string(anHourAgo)
                try await fleet.channel.publish(envelope.body, exchange: exchange, routingKey: "fixture.commands", properties: properties, mandatory: true)
                return try await fleet.waitForLetter(envelope.messageID)
            }
            let handled = try await deadLetter(Work(key: "again"), reason: "the database was read-only")
            let failing = try await deadLetter(Fail(key: "again"), reason: "the payment provider timed out")
            let dropped = try await deadLetter(Work(key: "dropped"), reason: "test data")
            _ = try await fleet.shopfleet(["dlq", "discard", dropped.id, "--reason", "test data"])
            func replay(_ arguments: [String]) async throws -> [Line] {
                try JSONDecoder().decode([Line].self, from: Data(try await fleet.shopfleet(["dlq", "replay"] + arguments + ["--json"]).utf8))
            }

            // --all: every waiting letter, and only those.
            let all = try await replay(["--all"])
            #expect(Set(all.map(\.id)) == Set([handled.id, failing.id]))
            #expect(all.allSatisfy { $0.outcome == "replayed" })
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.effects("again").count) == 1 }

            // The Fail message fails again (its retry tiers used up): waiting, with what it said this time.
            let again = try await fleet.waitForLetter(failing.messageID) { $0.failures == 2 }
            #expect(again.status == "waiting" && again.statusNote == nil)
            #expect(again.reason == "boom for again")
            #expect(again.errorType == "retries-exhausted" && again.attempts == 3)
            #expect(again.replays == 1)
            #expect(again.lastFailedAt > failing.lastFailedAt)
            #expect(again.fingerprint != failing.fingerprint)
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let shown = try decoder.decode(Shown.self, from: Data(try await fleet.shopfleet(["dlq", "show", failing.id, "--json"]).utf8))
            #expect(shown.letter.reason == "boom for again")
            #expect(shown.history.map(\.kind) == ["failed", "replayed", "failed"])
            #expect(shown.history.map(\.detail).first == "the payment provider timed out")
            #expect(shown.history.map(\.detail).last == "boom for again")
            let groups = try decoder.decode([DeadLetterGroup].self, from: Data(try await fleet.shopfleet(["dlq", "groups", "--json"]).utf8))
            #expect(groups.map(\.fingerprint) == [again.fingerprint])
            #expect(groups.first?.sampleError == "boom for again")

            // Without --again a replayed letter is skipped; --all then takes only the waiting one.
            #expect(try await fleet.shopfleet(["dlq", "replay", handled.id]).contains("already replayed"))
            #expect(try await replay(["--all", "--dry-run"]).map(\.id) == [failing.id])
            // --again adds the replayed ones, never the discarded.
            let widened = try await replay(["--all", "--again", "--dry-run"])
            #expect(Set(widened.map(\.id)) == Set([handled.id, failing.id]))
            #expect(widened.allSatisfy { $0.outcome == "would-replay" })

            // --again sends a replayed letter once more: it arrives, and the inbox knows it.
            let resent = try await fleet.shopfleet(["dlq", "replay", handled.id, "--again"])
            #expect(resent.contains("replayed 1, skipped 0, failed 0"))
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("fixture", "shopfleet_messages_duplicate_total", containing: "type=\"fixture.Work.v1\"")) == 1
            }
            #expect(try await fleet.effects("again") == [handled.messageID])
            let twice = try await fleet.waitForLetter(handled.messageID)
            #expect(twice.status == "replayed" && twice.replays == 2)
            #expect(try await fleet.count("SELECT count(*) FROM deadletters.history WHERE letter_id = $1 AND kind = 'replayed'", [handled.id]) == 2)

            // A discarded letter is not replayed, --again or not.
            #expect(try await fleet.shopfleet(["dlq", "replay", dropped.id, "--again"]).contains("already discarded"))
            let kept = try await fleet.waitForLetter(dropped.messageID)
            #expect(kept.status == "discarded" && kept.replays == 0)
        }
    }

    /// A count the management API keeps for the fleet's dead-letter queue (`messages`,
    /// `messages_unacknowledged`, …); nil until it has sampled one.
    static func deadLetterQueue(_ fleet: DeadLetterFleet, _ field: String) async throws -> Int? {
        let info = try await fleet.sandbox.management.queueInfo(fleet.sandbox.topology.deadLetterQueue, vhost: fleet.sandbox.vhost)
        if case .int(let count)? = info[field] { return count }
        return nil
    }
}
