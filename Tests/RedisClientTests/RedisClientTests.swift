import ClientRuntime
import ShopfleetTesting
@testable import RedisClient
import Testing

func redisConfiguration() throws -> RedisConfiguration {
    try RedisConfiguration(url: TestServers.redisURL())
}

func key(_ name: String) -> String { TestServers.uniqueName("test:\(name)") }

@Suite("Redis client against a real server", .serialized)
struct RedisClientTests {
    @Test func commandsAreBinarySafeAndRepliesTyped() async throws {
        let redis = RedisClient(configuration: try redisConfiguration())
        let k = key("bin")
        let value: [UInt8] = [0, 1, 2, 255, 0, 13, 10, 36]
        #expect(try await redis.send("SET", k, value) == .status("OK"))
        #expect(try await redis.send("GET", k) == .bulk(value))
        #expect(try await redis.send("GET", k + ":missing") == .null)
        #expect(try await redis.send("INCRBY", k + ":n", 5) == .integer(5))
        try await redis.send("RPUSH", k + ":l", "a", "b", "c")
        #expect(try await redis.send("LRANGE", k + ":l", 0, -1).array?.compactMap(\.string) == ["a", "b", "c"])
        let error = try await #require(throws: RedisError.self) { try await redis.send("INCR", k) }
        #expect(error.code == .server)
        #expect(error.message.contains("not an integer"))
        #expect(error.command == "INCR")
        // The connection is still good after an error reply.
        #expect(try await redis.send("DEL", k, k + ":n", k + ":l") == .integer(3))
        await redis.close()
    }

    @Test func pipelineSendsManyCommandsAndKeepsErrorsInPlace() async throws {
        let redis = RedisClient(configuration: try redisConfiguration())
        let k = key("pipe")
        var commands = (0..<1000).map { RedisCommand("RPUSH", k, $0) }
        commands.append(RedisCommand("INCR", k))  // wrong type: an error in place
        commands.append(RedisCommand("LLEN", k))
        let replies = try await redis.pipeline(commands)
        #expect(replies.count == 1002)
        #expect(replies[999] == .integer(1000))
        if case .error(let message) = replies[1000] { #expect(message.contains("WRONGTYPE")) } else { Issue.record("expected an error reply, got \(replies[1000])") }
        #expect(replies[1001] == .integer(1000))
        try await redis.send("DEL", k)
        await redis.close()
    }

    @Test func multiExecAndWatchAbort() async throws {
        let redis = RedisClient(configuration: try redisConfiguration(), maximumConnections: 2)
        let k = key("tx")
        let results = try await redis.transaction([RedisCommand("SET", k, "1"), RedisCommand("INCR", k), RedisCommand("GET", k)])
        #expect(results == [.status("OK"), .integer(2), .bulk(Array("2".utf8))])
        // WATCH on one connection, a write from another: EXEC aborts with nil.
        let other = try await RedisConnection.connect(try redisConfiguration())
        let aborted = try await redis.withConnection { connection -> [RedisReply]? in
            try await connection.send("WATCH", k)
            try await other.send("SET", k, "changed")
            return try await connection.transaction([RedisCommand("SET", k, "mine")])
        }
        #expect(aborted == nil)
        #expect(try await redis.send("GET", k).string == "changed")
        await other.close()
        try await redis.send("DEL", k)
        await redis.close()
    }

    @Test func scriptsRunByShaWithEvalFallback() async throws {
        let redis = RedisClient(configuration: try redisConfiguration(), maximumConnections: 1)
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        // Our SHA-1 matches the server's.
        #expect(try await redis.send("SCRIPT", "LOAD", script.source).string == script.sha1)
        try await redis.send("SCRIPT", "FLUSH")
        let k = key("script")
        #expect(try await redis.evaluate(script, keys: [k], arguments: [7]) == .integer(7))  // NOSCRIPT → EVAL
        #expect(try await redis.evaluate(script, keys: [k], arguments: [3]) == .integer(10))  // EVALSHA
        try await redis.send("DEL", k)
        await redis.close()
    }

    @Test func wrongPasswordIsAnAuthenticationError() async throws {
        var config = try redisConfiguration()
        config.password = "not-the-password"
        let error = try await #require(throws: RedisError.self) { _ = try await RedisConnection.connect(config) }
        #expect(error.code == .authenticationFailed)
        config.password = nil
        let missing = try await #require(throws: RedisError.self) { _ = try await RedisConnection.connect(config) }
        #expect(missing.code == .authenticationFailed)
    }

    @Test func serverNotRunningNamesHostAndPort() async throws {
        var config = try redisConfiguration()
        config.port = 1
        let start = ContinuousClock.now
        let error = try await #require(throws: RedisError.self) { _ = try await RedisConnection.connect(config) }
        #expect(error.code == .connectionFailed)
        #expect(error.description.contains("\(config.host):1"))
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func downThenUpFailsClearlyThenWorksAgain() async throws {
        let redis = RedisClient(configuration: try redisConfiguration(), maximumConnections: 2)
        let k = key("restart")
        try await redis.send("SET", k, "before")
        // Redis comes back up whatever happens inside (a failed #require throws): the later tests need it.
        try await TestServers.whileDown("redis") {
            let error = try await #require(throws: RedisError.self) { try await redis.send("GET", k) }
            #expect(error.code == .connectionLost || error.code == .connectionFailed)
            #expect(error.description.contains(":\(try redisConfiguration().port)"))
            // And again: now no connection can be made at all.
            let again = try await #require(throws: RedisError.self) { try await redis.send("GET", k) }
            #expect(again.code == .connectionFailed)
        }
        try await waitUntil(deadline: .seconds(15)) {
            (try? await redis.send("PING")) == .status("PONG")
        }
        try await redis.send("SET", k, "after")
        #expect(try await redis.send("GET", k).string == "after")
        try await redis.send("DEL", k)
        await redis.close()
    }

    @Test func commandsFromATaskPinnedToTheConnectionThread() async throws {
        let connection = try await RedisConnection.connect(try redisConfiguration())
        let k = key("pinned")
        let total = try await withTaskExecutorPreference(connection.executor) {
            var total: Int64 = 0
            for _ in 0..<100 { total = try await connection.send("INCR", k).integer ?? -1 }
            let replies = try await connection.pipeline((0..<10).map { _ in RedisCommand("INCR", k) })
            return replies.last?.integer ?? total
        }
        #expect(total == 110)
        try await connection.send("DEL", k)
        await connection.close()
    }

    @Test func concurrentCallersOnOneConnectionEachGetTheirOwnReplies() async throws {
        let connection = try await RedisConnection.connect(try redisConfiguration())
        let k = key("shared")
        // 64 tasks write their requests to one socket at once; replies come back in one stream and
        // each must reach the task that asked.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<64 {
                // Half of them run on the connection's thread, where a request with nothing else
                // in flight is answered inline and leaves any later replies it read to the thread.
                group.addTask(executorPreference: task % 2 == 0 ? connection.executor : nil) {
                    for round in 0..<50 {
                        let value = "\(task):\(round)"
                        try await connection.send("SET", "\(k):\(task)", value)
                        let replies = try await connection.pipeline([RedisCommand("GET", "\(k):\(task)"), RedisCommand("ECHO", value)])
                        #expect(replies == [.bulk(Array(value.utf8)), .bulk(Array(value.utf8))])
                    }
                }
            }
            try await group.waitForAll()
        }
        try await connection.send(RedisCommand("DEL", (0..<64).map { "\(k):\($0)" }))
        await connection.close()
    }

    @Test func aPipelineLargerThanTheSocketTakesAtOnceIsWrittenByTheThread() async throws {
        let connection = try await RedisConnection.connect(try redisConfiguration())
        let k = key("big")
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 4096)
        // 16 MB of commands: far more than a socket buffer, so most of it waits for the thread.
        let commands = (0..<4096).map { RedisCommand("SET", "\(k):\($0)", value) }
        // Both run on the connection's thread, whose jobs run in order: the big pipeline writes
        // what the socket takes and leaves the rest to the thread, then the small request is made
        // while that rest still waits, and must go after it.
        let (replies, small) = try await withTaskExecutorPreference(connection.executor) {
            async let big = connection.pipeline(commands)
            async let small = connection.send("EXISTS", "\(k):4095")
            return try await (big, small)
        }
        #expect(connection.requestsHandedToThread > 0)
        #expect(replies.count == 4096)
        #expect(replies.allSatisfy { $0 == .status("OK") })
        #expect(small == .integer(1))
        #expect(try await connection.send("STRLEN", "\(k):17") == .integer(4096))
        _ = try await connection.pipeline((0..<4096).map { RedisCommand("DEL", "\(k):\($0)") })
        await connection.close()
    }

    @Test func aSpinningConnectionCatchesRepliesWithoutSleepingAndKeepsItsDeadlines() async throws {
        var config = try redisConfiguration()
        // 100 ms: far longer than any loopback round trip, even on a busy machine, and still short
        // of the command timeout.
        config.spin = .milliseconds(100)
        config.commandTimeout = .milliseconds(300)
        let spinning = try await RedisConnection.connect(config)
        config.spin = .zero
        let sleeping = try await RedisConnection.connect(config)
        let k = key("spin")
        for connection in [spinning, sleeping] {
            for round in 0..<200 {
                try await connection.send("SET", k, round)
                #expect(try await connection.send("GET", k) == .bulk(Array(String(round).utf8)))
            }
            #expect(try await connection.pipeline((0..<100).map { RedisCommand("ECHO", $0) }) == (0..<100).map { .bulk(Array(String($0).utf8)) })
        }
        // A reply within the spin is read without the thread going to sleep: each of the 400 round
        // trips (and each command handed to the thread while it spins) is caught that way.
        #expect(spinning.wakeUpsSavedBySpinning >= 400)
        #expect(sleeping.wakeUpsSavedBySpinning == 0)
        // The spin ends: a reply that does not come still fails within the command timeout.
        let start = ContinuousClock.now
        let error = try await #require(throws: RedisError.self) { try await spinning.send("BLPOP", key("never"), 5) }
        #expect(error.code == .connectionLost)
        #expect(ContinuousClock.now - start < .seconds(3))
        try await sleeping.send("DEL", k)
        await spinning.close()
        await sleeping.close()
    }

    @Test func aReplyThatNeverComesFailsWithinTheCommandTimeout() async throws {
        var config = try redisConfiguration()
        config.commandTimeout = .milliseconds(300)
        let connection = try await RedisConnection.connect(config)
        let start = ContinuousClock.now
        // BLPOP on an empty list holds its reply for 5 s: longer than the command timeout.
        let error = try await #require(throws: RedisError.self) { try await connection.send("BLPOP", key("never"), 5) }
        #expect(error.code == .connectionLost)
        #expect(error.message.contains("no reply within"))
        #expect(error.command == "BLPOP")
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(!connection.isUsable)
        // Later requests fail at once, naming their own command.
        let later = try await #require(throws: RedisError.self) { try await connection.send("PING") }
        #expect(later.code == .connectionLost)
        #expect(later.command == "PING")
        await connection.close()
    }

    @Test func aKilledConnectionFailsItsWaitingRequests() async throws {
        let connection = try await RedisConnection.connect(try redisConfiguration())
        let admin = try await RedisConnection.connect(try redisConfiguration())
        let id = try #require(try await connection.send("CLIENT", "ID").integer)
        let k = key("killed")
        let waiting = Task { try await connection.send("BLPOP", k, 10) }
        // Once the BLPOP is blocked at the server, kill the connection from another one.
        try await waitUntil(deadline: .seconds(5)) {
            ((try? await admin.send("CLIENT", "LIST", "ID", id).string) ?? "").contains("cmd=blpop")
        }
        #expect(try await admin.send("CLIENT", "KILL", "ID", id) == .integer(1))
        let error = await #expect(throws: RedisError.self) { _ = try await waiting.value }
        #expect(error?.code == .connectionLost)
        #expect(error?.command == "BLPOP")
        #expect(!connection.isUsable)
        await connection.close()
        await admin.close()
    }

    @Test func urlParsing() throws {
        let config = try RedisConfiguration(url: "redis://:s%40cret@example.org:6400/3")
        #expect(config.host == "example.org")
        #expect(config.port == 6400)
        #expect(config.password == "s@cret")
        #expect(config.database == 3)
        #expect(!config.description.contains("cret"))
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://host/notanumber") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://host") }
    }
}

@Suite("RESP encoding")
struct RESPEncodingTests {
    @Test func encodesArgumentsBinarySafe() {
        let bytes = RedisConnection.encode([RedisCommand("SET", "k", [0, 13, 10] as [UInt8]), RedisCommand("PING")])
        #expect(bytes == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n".utf8) + [0, 13, 10] + Array("\r\n*1\r\n$4\r\nPING\r\n".utf8))
    }
}
