import Auth
import FoundationEssentials
import Hummingbird
import HTTPTypes
import Logging
import CoreMetrics
import Metrics
import NIOCore
import RedisClient

// The edge's front door: who the client is, and the limits that keep one client from guessing
// passwords, making accounts by the thousand or flooding the fleet with forged tokens.
//
// When Redis is down: the general request limit fails open (it protects the fleet's capacity;
// refusing every request would be the outage it guards against), while login and registration
// fail closed with 503 (a password guesser must not get unlimited tries because a cache
// restarted). docs/security.md.

/// An address or a CIDR range (`10.0.0.0/8`, `::1`, `fd00::/8`).
public struct IPRange: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]
    let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let bytes = Self.parse(String(first)) else { return nil }
        let bits = bytes.count * 8
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bits).contains(n) else { return nil }
            prefix = n
        } else {
            prefix = bits
        }
        self.bytes = bytes
    }

    public var description: String { "\(bytes.count == 4 ? bytes.map(String.init).joined(separator: ".") : "ipv6")/\(prefix)" }

    public func contains(_ address: String) -> Bool {
        guard var other = Self.parse(address) else { return false }
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d), as a dual-stack socket reports it.
        if other.count == 16, bytes.count == 4, other[0..<10].allSatisfy({ $0 == 0 }), other[10] == 0xff, other[11] == 0xff {
            other = Array(other[12...])
        }
        guard other.count == bytes.count else { return false }
        var remaining = prefix
        for i in bytes.indices where remaining > 0 {
            let take = min(8, remaining)
            let mask: UInt8 = take == 8 ? 0xff : ~(0xff >> UInt8(take))
            if bytes[i] & mask != other[i] & mask { return false }
            remaining -= take
        }
        return true
    }

    /// Four bytes for IPv4, sixteen for IPv6; nil for anything else.
    static func parse(_ text: String) -> [UInt8]? {
        let text = String(text.filter { !$0.isWhitespace })
        if !text.contains(":") {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var out: [UInt8] = []
            for part in parts {
                guard !part.isEmpty, part.count <= 3, let n = UInt8(part) else { return nil }
                out.append(n)
            }
            return out
        }
        var head: [UInt16] = [], tail: [UInt16] = [], seenGap = false
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let items = s.split(separator: ":", omittingEmptySubsequences: false)
            for (index, item) in items.enumerated() {
                if index == items.count - 1, item.contains("."), let v4 = parse(String(item)) {
                    out.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    out.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                } else {
                    guard !item.isEmpty, item.count <= 4, let n = UInt16(item, radix: 16) else { return nil }
                    out.append(n)
                }
            }
            return out
        }
        guard let h = groups(halves[0]) else { return nil }
        head = h
        if halves.count == 2 {
            seenGap = true
            guard let t = groups(halves[1]) else { return nil }
            tail = t
        }
        let missing = 8 - head.count - tail.count
        guard seenGap ? missing >= 1 : missing == 0 else { return nil }
        let all = head + [UInt16](repeating: 0, count: missing) + tail
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }
}

/// Sets ``EdgeContext/client``: the peer, or — when the peer is one of the trusted proxies — the
/// last address in `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address
/// it received from, so entries to the left of it are whatever the client chose to send). A
/// client that is not a trusted proxy cannot change its key by sending the header.
struct ClientAddress: RouterMiddleware {
    typealias Context = EdgeContext
    let trusted: [IPRange]

    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    func handle(_ request: Request, context: EdgeContext, next: (Request, EdgeContext) async throws -> Response) async throws -> Response {
        var context = context
        context.client = Self.client(peer: context.client, forwardedFor: request.headers[values: Self.forwardedFor], trusted: trusted)
        return try await next(request, context)
    }

    static func client(peer: String, forwardedFor: [String], trusted: [IPRange]) -> String {
        guard !trusted.isEmpty, trusted.contains(where: { $0.contains(peer) }) else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { String($0.filter { !$0.isWhitespace }) }
        for hop in hops.reversed() {
            guard IPRange.parse(hop) != nil else { return peer }  // garbage: keep what we know
            if !trusted.contains(where: { $0.contains(hop) }) { return hop }
        }
        return hops.first ?? peer
    }
}

/// A token that does not verify is refused after the rate limit, keyed on the client's address,
/// has counted it: a flood of forged tokens is limited like any other.
struct TokenGate: RouterMiddleware {
    typealias Context = EdgeContext
    func handle(_ request: Request, context: EdgeContext, next: (Request, EdgeContext) async throws -> Response) async throws -> Response {
        if let problem = context.tokenProblem { throw Problem.unauthorized(problem) }
        return try await next(request, context)
    }
}

enum FrontDoorMetrics {
    static let unknownEmailLogins = Counter(label: "shopfleet_edge_login_unknown_email_total")
    static let throttledLogins = Counter(label: "shopfleet_edge_login_throttled_total")
    static let refusedRegistrations = Counter(label: "shopfleet_edge_registrations_limited_total")
    static let busyPasswords = Counter(label: "shopfleet_edge_password_work_busy_total")
}

/// Failed logins, per account and per client, in Redis. Per account, atomically: an attempt is
/// counted (as if it failed) before the password is checked, in the same script that checks the
/// block, so parallel guesses cannot all pass the check before any is counted. After `free`
/// attempts the account waits 2 s, then 4 s, … up to 5 minutes; a success clears it. Per client,
/// failures only (`free * 10`, then the same waits): one address may serve many customers (an
/// office, a carrier's NAT) who log in at once, and only their failures should count — so a
/// client's parallel attempts may overshoot its allowance by those in flight, never an account's.
struct LoginThrottle {
    let redis: RedisClient
    let accountKey: String
    let clientKey: String
    static let free = 3
    static var clientFree: Int { free * 10 }

    init(redis: RedisClient, prefix: String, email: String, client: String) {
        self.redis = redis
        accountKey = "\(prefix)login-failures:\(email.lowercased())"
        clientKey = "\(prefix)login-failures:client:\(client)"
    }

    /// Seconds to wait (0: go on, the account's attempt counted). KEYS: account, client.
    static let begin = RedisScript("""
        local now = tonumber(ARGV[1])
        local wait = 0
        for i, key in ipairs(KEYS) do
            local untilAt = tonumber(redis.call('HGET', key, 'until') or '0')
            if untilAt > now then wait = math.max(wait, untilAt - now) end
        end
        if wait > 0 then return wait end
        local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
        local free = tonumber(ARGV[2])
        if count >= free then
            redis.call('HSET', KEYS[1], 'until', now + math.min(2 ^ (count - free + 1), 300))
        end
        redis.call('EXPIRE', KEYS[1], 3600)
        return 0
        """)

    /// A failure from the client. KEYS: client.
    static let failure = RedisScript("""
        local now, free = tonumber(ARGV[1]), tonumber(ARGV[2])
        local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
        if count >= free then
            redis.call('HSET', KEYS[1], 'until', now + math.min(2 ^ (count - free + 1), 300))
        end
        redis.call('EXPIRE', KEYS[1], 3600)
        return count
        """)

    /// Counts this attempt, or refuses it (429 with `Retry-After`) while the account or the
    /// client must wait. Redis down: 503 (fail closed).
    func begin() async throws {
        let wait: Int64
        do {
            let reply = try await redis.evaluate(Self.begin, keys: [accountKey, clientKey],
                                                 arguments: [Int64(Date().timeIntervalSince1970), Int64(Self.free)])
            wait = reply.integer ?? 0
        } catch {
            throw Problem.unavailable("logins are paused: the edge cannot count failed attempts (Redis is unreachable); try again shortly")
        }
        if wait > 0 {
            FrontDoorMetrics.throttledLogins.increment()
            var problem = Problem(.tooManyRequests, "login-throttled", "Too many failed logins",
                                  "too many failed logins for this email or from this client; try again in \(wait) s")
            problem.headers[.retryAfter] = String(wait)
            throw problem
        }
    }

    /// The password was wrong (or the account unknown): the client's count too.
    func failed() async {
        _ = try? await redis.evaluate(Self.failure, keys: [clientKey], arguments: [Int64(Date().timeIntervalSince1970), Int64(Self.clientFree)])
    }

    /// The password was right: the account starts afresh.
    func succeeded() async { _ = try? await redis.send("DEL", accountKey) }
}

/// Accounts one client may register: `perHour`, as a token bucket in Redis. Redis down: 503.
struct RegistrationLimit {
    let redis: RedisClient
    let prefix: String
    let perHour: Int

    func check(client: String) async throws {
        let reply: RedisReply
        do {
            reply = try await redis.evaluate(RateLimiter.script, keys: ["\(prefix)registrations:\(client)"],
                                             arguments: [Double(perHour) / 3600, perHour, Date().timeIntervalSince1970])
        } catch {
            throw Problem.unavailable("registration is paused: the edge cannot count registrations (Redis is unreachable); try again shortly")
        }
        if let values = reply.array, values.count == 2, values[0].integer == 0 {
            FrontDoorMetrics.refusedRegistrations.increment()
            var problem = Problem(.tooManyRequests, "registration-limited", "Too many registrations",
                                  "this client may register \(perHour) accounts an hour; try again later")
            problem.headers[.retryAfter] = String(max(1, values[1].integer ?? 1))
            throw problem
        }
    }
}
