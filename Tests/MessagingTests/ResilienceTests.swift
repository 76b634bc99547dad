import AMQPClient
import ClientRuntime
import FixtureWorker
import FoundationEssentials
@testable import Messaging
import ShopfleetTesting
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The worker when its servers go away, and when a message keeps killing it. These stop and
/// start the test servers, so they run one at a time.
@Suite("Worker resilience", .serialized)
struct ResilienceTests {
    /// PostgreSQL stops: readiness says so; a message that arrives meanwhile is held, not acked,
    /// not dead-lettered; when the database is back it is handled once and readiness returns.
    @Test func databaseDownThenUp() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            try await TestServers.control("down-postgres")
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.http("/readyz"))?.status == 503 }
            #expect(try await fleet.http("/readyz").body.contains("PostgreSQL unreachable"))
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key))
            try await TestServers.control("up-postgres")
            try await fleet.waitForCount("effects", key: key, toBe: 1, deadline: .seconds(40))
            try await waitUntil(deadline: .seconds(20)) { (try? await fleet.http("/readyz"))?.status == 200 }
            #expect(try await fleet.metric("shopfleet_messages_dead_lettered_total") == 0)
            #expect(try await fleet.count("effects", key: key) == 1)
            #expect(try await fleet.stop() == 0)
        } onFailure: {
            try? await TestServers.control("up-postgres")
        }
    }

    /// The broker drops every connection: readiness goes false, the worker reconnects and
    /// consumes again by itself.
    @Test func brokerConnectionsClosedThenRecovered() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start()
            try await TestServers.control("close-connections")
            try await waitUntil(deadline: .seconds(30)) { fleet.log.contains("lost the broker; reconnecting") }
            try await waitUntil(deadline: .seconds(30)) { fleet.log.contains("broker connection recovered") }
            try await waitUntil(deadline: .seconds(30)) { (try? await fleet.http("/readyz"))?.status == 200 }
            let key = TestServers.uniqueName("k")
            // The test's own connection recovers too; its first publish may find it still down.
            try await waitUntil(deadline: .seconds(30)) { (try? await fleet.send(Work(key: key))) != nil }
            try await fleet.waitForCount("effects", key: key, toBe: 1, deadline: .seconds(30))
            #expect(try await fleet.stop() == 0)
        }
    }

    /// A message whose handler kills the worker every time: after the queue's delivery limit the
    /// broker dead-letters it with `x-death`, and the next worker runs normally.
    @Test func poisonMessageIsDeadLetteredByTheDeliveryLimit() async throws {
        try await FixtureFleet.with { fleet in
            let sent = try await fleet.send(Crash(key: "poison"))
            var crashes = 0
            var letter: AMQPDelivery?
            while letter == nil && crashes < 8 {
                try await fleet.start(waitReady: false)
                // Either it dies on the poison message, or (once the broker gave up on it) it runs.
                let outcome = try await withDeadline(.seconds(30)) { () -> Bool in
                    while true {
                        if (try? await fleet.http("/readyz"))?.status == 200 { return true }
                        if fleet.process!.poll() != nil { return false }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                if outcome {
                    // Ready first does not mean spared: the poison message may reach a handler just
                    // after. Wait for whichever comes: the dead letter, or the crash.
                    let box = DeliveryBox()
                    try await waitUntil(deadline: .seconds(10)) {
                        if let delivery = try? await fleet.channel.get(queue: fleet.sandbox.topology.deadLetterQueue, noAck: true) {
                            box.set(delivery)
                            return true
                        }
                        return fleet.process!.poll() != nil
                    }
                    letter = box.get()
                    if letter == nil {
                        #expect(try await fleet.exited() == 128 + SIGKILL)
                        crashes += 1
                    }
                } else {
                    #expect(try await fleet.exited() == 128 + SIGKILL)
                    crashes += 1
                }
            }
            let dead = try #require(letter)
            #expect(dead.properties.messageID == sent.messageID)
            let death = dead.properties.headers?["x-death"]
            #expect("\(String(describing: death))".contains("delivery_limit"))
            // It took at least one crash. The broker counts returns, not crashes: a CI run saw the
            // delivery limit (3) reached after one crash the test observed, so the number of crashes
            // is not asserted further; the x-death reason above is what proves the redrive.
            #expect(crashes >= 1)
            let key = TestServers.uniqueName("k")
            _ = try await fleet.send(Work(key: key))
            try await fleet.waitForCount("effects", key: key, toBe: 1)
            #expect(try await fleet.stop() == 0)
        }
    }

    /// A worker killed while it handles one message gives back only that one as an attempt: the
    /// messages waiting behind it were never handed to it (prefetch 1), so RabbitMQ 3.10 does not
    /// count them towards their delivery limit (it counts every delivery a dead consumer held).
    @Test func messagesAKilledWorkerNeverStartedDoNotCountAsAttempts() async throws {
        try await FixtureFleet.with { fleet in
            try await fleet.start(concurrency: 1)
            let slow = try await fleet.send(Slow(key: TestServers.uniqueName("held"), milliseconds: 120_000))
            var waiting: [Envelope] = []
            for index in 0..<5 { waiting.append(try await fleet.send(Work(key: TestServers.uniqueName("waiting-\(index)")))) }
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("shopfleet_handlers_in_flight", containing: "fixture.commands")) == 1
            }
            #expect(try await fleet.stop(signal: SIGKILL) == 128 + SIGKILL)
            // Everything is back on the queue: read each message with its delivery count.
            let counts = Mutex<[String: Int64]>([:])
            try await waitUntil(deadline: .seconds(20)) {
                if let delivery = try? await fleet.channel.get(queue: "fixture.commands", noAck: true) {
                    let count = delivery.properties.headers?["x-delivery-count"]?.int ?? 0
                    counts.withLock { $0[delivery.properties.messageID ?? ""] = count }
                }
                return counts.withLock { $0.count } == 6
            }
            let seen = counts.withLock { $0 }
            #expect(seen[slow.messageID] == 1, "the message in its handler when the worker died counts once")
            for envelope in waiting {
                #expect(seen[envelope.messageID] == 0, "a message the dead worker never started was counted as an attempt")
            }
        }
    }

    /// A request nobody took before its caller gave up is dropped by the worker that finds it,
    /// not expired by the broker into the dead letters (a quorum queue with a dead-letter policy
    /// dead-letters what expires): an operator has nothing to do about a question nobody asks.
    @Test func aRequestWhoseCallerStoppedWaitingIsDroppedNotDeadLettered() async throws {
        try await FixtureFleet.with { fleet in
            let queries = try await QueryClient(connection: fleet.amqp)
            // Nobody consumes fixture.queries yet: the caller times out.
            let asked = ContinuousClock.now
            await #expect(throws: QueryClient.Failure.self) {
                _ = try await queries.ask(CountEffects(key: "k"), timeout: .milliseconds(300))
            }
            // Past its deadline and the workers' leeway for clocks (1 s), whenever the worker starts.
            try await Task.sleep(until: asked + .milliseconds(1500))
            try await fleet.start()
            try await waitUntil(deadline: .seconds(20)) {
                (try? await fleet.metric("shopfleet_requests_expired_total", containing: "fixture.CountEffects.v1")) == 1
            }
            #expect(try await fleet.channel.get(queue: fleet.sandbox.topology.deadLetterQueue, noAck: true) == nil)
            #expect(try await fleet.metric("shopfleet_messages_dead_lettered_total") == 0)
            // One asked in time is answered.
            #expect(try await queries.ask(CountEffects(key: "k")).count == 0)
            try await queries.close()
        }
    }
}
