@testable import AMQPClient
import ClientRuntime
import ShopfleetTesting
import Synchronization
import Testing

func amqpConfiguration() throws -> AMQPConfiguration {
    try AMQPConfiguration(url: TestServers.amqpURL(), connectionName: "shopfleet-tests")
}

/// A durable quorum queue with a unique name, as Shopfleet's queues are.
func quorumQueue(_ channel: AMQPChannel, _ prefix: String) async throws -> String {
    let name = TestServers.uniqueName(prefix)
    try await channel.declareQueue(name, arguments: ["x-queue-type": "quorum"])
    return name
}

@Suite("AMQP client against a real broker", .serialized)
struct AMQPClientTests {
    @Test func publishWithConfirmsThenConsumeWithAck() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let queue = try await quorumQueue(channel, "confirm")
        let count = 500
        // Many publishes in flight at once, each awaiting its own confirm.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<count {
                group.addTask {
                    try await channel.publish("message \(i)", routingKey: queue,
                                              properties: AMQPProperties(messageID: "m\(i)"))
                }
            }
            try await group.waitForAll()
        }
        #expect(try await channel.declareQueue(queue, passive: true).messageCount == UInt32(count))
        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.setPrefetch(50)
        let consumer = try await consumerChannel.consume(queue: queue)
        // Every loop over deliveries has a deadline: a message that never comes fails the test.
        let seen = try await withDeadline(.seconds(60)) {
            var seen = Set<String>()
            for try await delivery in consumer {
                #expect(delivery.message.bodyString == "message \(delivery.properties.messageID!.dropFirst())")
                seen.insert(delivery.properties.messageID!)
                delivery.ack()
                if seen.count == count { break }
            }
            return seen
        }
        #expect(seen.count == count)
        try await consumer.cancel()
        try await waitUntil(deadline: .seconds(10)) {
            try await channel.declareQueue(queue, passive: true).messageCount == 0
        }
        try await channel.deleteQueue(queue)
        await connection.close()
    }

    @Test func publishAndConsumeFromTasksPinnedToTheConnectionThread() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        try await channel.setPrefetch(20)
        let queue = try await quorumQueue(channel, "pinned")
        let received = try await withTaskExecutorPreference(connection.executor) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<200 {
                    group.addTask { try await channel.publish("p\(i)", routingKey: queue) }
                }
                try await group.waitForAll()
            }
            let consumer = try await channel.consume(queue: queue)
            return try await withDeadline(.seconds(60)) {
                var seen = Set<String>()
                for try await delivery in consumer {
                    seen.insert(delivery.message.bodyString)
                    delivery.ack()
                    if seen.count == 200 { break }
                }
                return seen
            }
        }
        #expect(received == Set((0..<200).map { "p\($0)" }))
        try await channel.deleteQueue(queue)
        await connection.close()
    }

    /// A burst of acks goes out as one `multiple` ack for the oldest deliveries it settles, and
    /// never settles a delivery that was not acked: those come back when the channel closes.
    @Test func aBurstOfAcksIsOneFrameAndSettlesOnlyWhatWasAcked() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let queue = try await quorumQueue(channel, "coalesce")
        for i in 0..<40 { try await channel.publish("\(i)", routingKey: queue) }
        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.setPrefetch(40)
        let consumer = try await consumerChannel.consume(queue: queue)
        let deliveries = try await withDeadline(.seconds(60)) {
            var deliveries: [AMQPDelivery] = []
            for try await delivery in consumer {
                deliveries.append(delivery)
                if deliveries.count == 40 { break }
            }
            return deliveries
        }
        #expect(deliveries.map(\.message.bodyString) == (0..<40).map { "\($0)" })
        let before = connection.settlementFrames.load(ordering: .relaxed)
        // On the connection's thread, so the 38 acks are one burst: nothing sends them until it yields.
        let toAck = deliveries.filter { $0.message.bodyString != "20" && $0.message.bodyString != "30" }
        await withTaskExecutorPreference(connection.executor) {
            for delivery in toAck { delivery.ack() }
        }
        // 0…19 as one multiple ack (20 is not acked, so it must stop there), then 21…29 and 31…39 one by one.
        try await waitUntil(deadline: .seconds(5)) { connection.settlementFrames.load(ordering: .relaxed) - before == 19 }
        try await consumerChannel.close()
        // What was not acked is back, and only that.
        try await waitUntil(deadline: .seconds(10)) { try await channel.declareQueue(queue, passive: true).messageCount == 2 }
        var back: [String] = []
        while let delivery = try await channel.get(queue: queue) {
            back.append(delivery.message.bodyString)
            delivery.ack()
        }
        #expect(back.sorted() == ["20", "30"])
        // Deliveries fetched with basic.get are settled the same way: three acks, one frame.
        for i in 0..<3 { try await channel.publish("g\(i)", routingKey: queue) }
        var fetched: [AMQPDelivery] = []
        while fetched.count < 3, let delivery = try await channel.get(queue: queue) { fetched.append(delivery) }
        let beforeGet = connection.settlementFrames.load(ordering: .relaxed)
        await withTaskExecutorPreference(connection.executor) {
            for delivery in fetched { delivery.ack() }
        }
        try await waitUntil(deadline: .seconds(5)) { connection.settlementFrames.load(ordering: .relaxed) - beforeGet == 1 }
        try await channel.close()
        let check = try await connection.openChannel()
        try await waitUntil(deadline: .seconds(10)) { try await check.declareQueue(queue, passive: true).messageCount == 0 }
        try await check.deleteQueue(queue)
        await connection.close()
    }

    @Test func propertiesAndHeadersRoundTrip() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let queue = try await quorumQueue(channel, "props")
        let headers: AMQPTable = [
            "saga-id": "s-1", "attempt": 3, "flag": true, "ratio": .double(0.5),
            "nested": .table(["a": .array(["x", 1, .table(["deep": "yes"])])]),
        ]
        let properties = AMQPProperties(contentType: "application/json", headers: headers, persistent: true,
                                        correlationID: "c-1", messageID: "m-1", timestamp: 1_764_000_000,
                                        type: "orders.PlaceOrder.v1", appID: "tests")
        let body: [UInt8] = Array("{\"a\":1}".utf8) + [0, 255]
        try await channel.publish(body, routingKey: queue, properties: properties)
        let delivery = try #require(try await channel.get(queue: queue))
        #expect(delivery.body == body)
        // Quorum queues count deliveries in a header of their own.
        var received = delivery.properties
        #expect(received.headers?.removeValue(forKey: "x-delivery-count") == .int(0))
        #expect(received == properties)
        #expect(delivery.routingKey == queue)
        #expect(!delivery.redelivered)
        delivery.nack(requeue: true)
        let again = try #require(try await channel.get(queue: queue))
        #expect(again.redelivered)
        again.ack()
        #expect(try await channel.get(queue: queue) == nil)
        try await channel.deleteQueue(queue)
        await connection.close()
    }

    @Test func publishWithAConfirmCallbackReportsEachOutcome() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let queue = try await quorumQueue(channel, "callback")
        let exchange = TestServers.uniqueName("ex")
        try await channel.declareExchange(exchange, type: .topic, durable: false, autoDelete: true)
        let outcomes = Mutex<[String: String]>([:])
        func record(_ id: String) -> @Sendable ((any Error)?) -> Void {
            { error in
                let text = error.map { ($0 as? AMQPError).map { "\($0.code)" } ?? "\($0)" } ?? "confirmed"
                outcomes.withLock { $0[id] = text }
            }
        }
        // Many in flight from one task, none awaited; one that no queue takes, mandatory.
        let count = 300
        for i in 0..<count {
            channel.publish(Array("message \(i)".utf8), routingKey: queue, properties: AMQPProperties(messageID: "m\(i)"),
                            confirmed: record("m\(i)"))
        }
        channel.publish(Array("lost".utf8), exchange: exchange, routingKey: "nobody.listens",
                        properties: AMQPProperties(messageID: "lost"), mandatory: true, confirmed: record("lost"))
        try await waitUntil(deadline: .seconds(10)) { outcomes.withLock { $0.count } == count + 1 }
        let all = outcomes.withLock { $0 }
        #expect(all["lost"] == "unroutable")
        #expect(all.filter { $0.key != "lost" }.values.allSatisfy { $0 == "confirmed" })
        #expect(try await channel.declareQueue(queue, passive: true).messageCount == UInt32(count))
        // On a closed connection the callback gets the error at once.
        try await channel.deleteQueue(queue)
        try await channel.deleteExchange(exchange)
        await connection.close()
        let closed = Mutex<(any Error)?>(nil)
        channel.publish(Array("late".utf8), routingKey: queue) { error in closed.withLock { $0 = error } }
        try await waitUntil(deadline: .seconds(5)) { closed.withLock { $0 != nil } }
        #expect(closed.withLock { ($0 as? AMQPError)?.code } == .closed)
    }

    @Test func passiveDeclareOfMissingQueueIs404AndChannelRecovers() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        let error = try await #require(throws: AMQPError.self) {
            try await channel.declareQueue("no-such-queue-\(UInt32.random(in: 0...UInt32.max))", passive: true)
        }
        #expect(error.code == .channelClosed)
        #expect(error.replyCode == 404)
        #expect(error.message.contains("no-such-queue"))
        // The same channel works again.
        let queue = try await quorumQueue(channel, "after404")
        #expect(try await channel.declareQueue(queue, passive: true).messageCount == 0)
        try await channel.deleteQueue(queue)
        await connection.close()
    }

    /// A publish to a missing exchange closes its channel (404); the next publish reopens it.
    /// The reopening waits for the broker's answers, so it must not sit behind the corked socket
    /// of the burst it is sent in (Linux would hold the frames up to 200 ms). What is asserted is
    /// the kernel's state when each wait begins (`TCP_CORK` read back), not how long it took.
    @Test func aPublishAfterAChannelErrorReopensTheChannelWithoutDelay() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let queue = try await quorumQueue(channel, "reopened")
        let missing = TestServers.uniqueName("no-such-exchange")
        let awaitedBefore = connection.repliesAwaited.load(ordering: .relaxed)
        let corkedBefore = connection.repliesAwaitedCorked.load(ordering: .relaxed)
        for round in 0..<5 {
            let error = try await #require(throws: AMQPError.self) {
                try await channel.publish("x", exchange: missing, routingKey: "k")
            }
            #expect(error.code == .channelClosed)
            #expect(error.replyCode == 404)
            #expect(error.message.contains(missing))
            // Ten at once: they leave in one burst, the first of which reopens the channel.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<10 {
                    group.addTask { try await channel.publish("y\(round)-\(n)", routingKey: queue) }
                }
                try await group.waitForAll()
            }
        }
        // Each reopening waited for channel.open-ok and confirm.select-ok inside a corked burst.
        let awaited = connection.repliesAwaited.load(ordering: .relaxed) - awaitedBefore
        #expect(awaited >= 10, "the five reopenings waited for \(awaited) replies")
        #expect(connection.repliesAwaitedCorked.load(ordering: .relaxed) - corkedBefore == 0,
                "a reply was waited for while the kernel held the request corked")
        #expect(try await channel.declareQueue(queue, passive: true).messageCount == 50)
        try await channel.deleteQueue(queue)
        await connection.close()
    }

    @Test func unroutableMandatoryPublishIsReported() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let channel = try await connection.openChannel()
        try await channel.enableConfirms()
        let exchange = TestServers.uniqueName("ex")
        try await channel.declareExchange(exchange, type: .topic, durable: false, autoDelete: true)
        let error = try await #require(throws: AMQPError.self) {
            try await channel.publish("x", exchange: exchange, routingKey: "nobody.listens",
                                      properties: AMQPProperties(messageID: "lost-1"), mandatory: true)
        }
        #expect(error.code == .unroutable)
        #expect(error.message.contains("nobody.listens"))
        // Routable mandatory publishes on the same channel still confirm.
        let queue = try await quorumQueue(channel, "routed")
        try await channel.bindQueue(queue, to: exchange, routingKey: "orders.#")
        try await channel.publish("y", exchange: exchange, routingKey: "orders.placed", mandatory: true)
        try await channel.deleteQueue(queue)
        try await channel.deleteExchange(exchange)
        await connection.close()
    }

    @Test func requestReplyOverDirectReplyTo() async throws {
        let connection = try await AMQPConnection.connect(try amqpConfiguration())
        let serverChannel = try await connection.openChannel()
        let queue = TestServers.uniqueName("rpc")
        try await serverChannel.declareQueue(queue, durable: false, autoDelete: true)
        let requests = try await serverChannel.consume(queue: queue)
        let responder = Task {
            for try await request in requests {
                try await serverChannel.reply(to: request, body: Array("echo: \(request.message.bodyString)".utf8))
                request.ack()
            }
        }
        let requester = try await AMQPRequester.open(on: connection)
        let reply = try await requester.request(Array("ping".utf8), routingKey: queue, timeout: .seconds(5))
        #expect(reply.bodyString == "echo: ping")
        // Concurrent requests each get their own reply.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<50 {
                group.addTask {
                    let r = try await requester.request(Array("n\(i)".utf8), routingKey: queue, timeout: .seconds(5))
                    #expect(r.bodyString == "echo: n\(i)")
                }
            }
            try await group.waitForAll()
        }
        // A queue nobody answers from: a typed timeout, on time.
        let silent = TestServers.uniqueName("silent")
        try await serverChannel.declareQueue(silent, durable: false, autoDelete: false)
        let start = ContinuousClock.now
        let timeout = try await #require(throws: AMQPError.self) {
            _ = try await requester.request(Array("hello?".utf8), routingKey: silent, timeout: .milliseconds(300))
        }
        #expect(timeout.code == .timeout)
        #expect(ContinuousClock.now - start < .seconds(3))
        // No queue at all: unroutable at once.
        let unroutable = try await #require(throws: AMQPError.self) {
            _ = try await requester.request(Array("x".utf8), routingKey: "no-such-queue-for-rpc", timeout: .seconds(5))
        }
        #expect(unroutable.code == .unroutable)
        responder.cancel()
        try await serverChannel.deleteQueue(silent)
        await connection.close()
    }

    @Test func wrongCredentialsAreAnAuthenticationError() async throws {
        var config = try amqpConfiguration()
        config.password = "not-the-password"
        let error = try await #require(throws: AMQPError.self) { _ = try await AMQPConnection.connect(config) }
        #expect(error.code == .authenticationFailed)
        #expect(!error.description.contains("not-the-password"))
    }

    @Test func brokerNotRunningNamesHostAndPortWithinDeadline() async throws {
        var config = try amqpConfiguration()
        config.port = 1
        let start = ContinuousClock.now
        let error = try await #require(throws: AMQPError.self) { _ = try await AMQPConnection.connect(config) }
        #expect(error.code == .connectionFailed)
        #expect(error.description.contains("\(config.host):1"))
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func urlParsing() throws {
        let c = try AMQPConfiguration(url: "amqp://u%40x:p%2Fw@broker.local:5673/shop%2Fprod?heartbeat=10&connection_timeout=2500")
        #expect(c.user == "u@x")
        #expect(c.password == "p/w")
        #expect(c.host == "broker.local")
        #expect(c.port == 5673)
        #expect(c.vhost == "shop/prod")
        #expect(c.heartbeat == 10)
        #expect(c.connectTimeout == .milliseconds(2500))
        #expect(!c.description.contains("p/w"))
        #expect(try AMQPConfiguration(url: "amqp://h").vhost == "/")
        #expect(try AMQPConfiguration(url: "amqp://h/%2F").vhost == "/")
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://h?heartbeat=x") }
        #expect(throws: AMQPError.self) { try AMQPConfiguration(url: "amqp://h:99999") }
    }
}

/// The connection dropping under load: nothing whose publish was confirmed may be lost.
@Suite("AMQP recovery", .serialized)
struct AMQPRecoveryTests {
    final class Seen: Sendable {
        let confirmed = Mutex<Set<Int>>([])
        let consumed = Mutex<Set<Int>>([])
    }

    func runUnderFault(messages: Int, fault: @Sendable () async throws -> Void) async throws {
        var config = try amqpConfiguration()
        config.heartbeat = 5
        let connection = try await AMQPConnection.connect(config)
        let setup = try await connection.openChannel()
        let queue = try await quorumQueue(setup, "recovery")
        let publisher = try await connection.openChannel()
        try await publisher.enableConfirms()
        let consumerChannel = try await connection.openChannel()
        try await consumerChannel.setPrefetch(100)
        let consumer = try await consumerChannel.consume(queue: queue)
        let seen = Seen()
        let events = connection.events

        let consuming = Task {
            for try await delivery in consumer {
                if let id = Int(delivery.message.bodyString) { seen.consumed.withLock { _ = $0.insert(id) } }
                delivery.ack()
            }
        }
        let publishing = Task {
            for i in 0..<messages {
                // At-least-once: publish again until the broker confirms.
                while true {
                    do {
                        try await publisher.publish(String(i), routingKey: queue)
                        seen.confirmed.withLock { _ = $0.insert(i) }
                        break
                    } catch let error as AMQPError where error.code == .connectionLost || error.code == .notConnected {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
                if i % 50 == 0 { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        try await waitUntil(deadline: .seconds(20)) { seen.confirmed.withLock { $0.count } > messages / 10 }
        try await fault()
        // The connection reports the drop and the recovery.
        let recovered = try await withDeadline(.seconds(90)) { () -> Bool in
            var sawDisconnect = false
            for await event in events {
                if case .disconnected = event { sawDisconnect = true }
                if case .recovered = event, sawDisconnect { return true }
            }
            return false
        }
        #expect(recovered)
        try await withDeadline(.seconds(90)) { try await publishing.value }
        try await waitUntil(deadline: .seconds(60)) {
            let confirmed = seen.confirmed.withLock { $0 }
            return confirmed.count == messages && confirmed.isSubset(of: seen.consumed.withLock { $0 })
        }
        consuming.cancel()
        try await setup.deleteQueue(queue)
        await connection.close()
    }

    @Test func recoversFromClosedConnectionsWithoutLosingConfirmedMessages() async throws {
        try await runUnderFault(messages: 2000) {
            try await TestServers.control("close-connections")
        }
    }

    @Test func recoversFromBrokerRestartWithoutLosingConfirmedMessages() async throws {
        try await runUnderFault(messages: 1500) {
            try await TestServers.control("down-rabbitmq")
            try await TestServers.control("up-rabbitmq")
        }
    }
}
