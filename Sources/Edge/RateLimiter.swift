import Auth
import FoundationEssentials
import Hummingbird
import HTTPTypes
import Logging
import RedisClient

/// A token bucket per client in Redis (one Lua script, so replicas of the edge share it): `rate`
/// tokens a second, up to `burst`. An empty bucket is `429` with `Retry-After`. Redis being down
/// lets requests through (logged): the limit protects the fleet, it must not take it down.
struct RateLimiter: RouterMiddleware {
    typealias Context = EdgeContext
    let redis: RedisClient
    let rate: Double
    let burst: Int
    let prefix: String

    static let script = RedisScript("""
        local key, rate, burst, now = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local state = redis.call('HMGET', key, 'tokens', 'at')
        local tokens = tonumber(state[1]) or burst
        local at = tonumber(state[2]) or now
        tokens = math.min(burst, tokens + (now - at) * rate)
        local allowed = 0
        local wait = 0
        if tokens >= 1 then
            tokens = tokens - 1
            allowed = 1
        else
            wait = math.ceil((1 - tokens) / rate)
        end
        redis.call('HSET', key, 'tokens', tokens, 'at', now)
        redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
        return {allowed, wait}
        """)

    func handle(_ request: Request, context: EdgeContext, next: (Request, EdgeContext) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let who = context.claims.map { "customer:\($0.customerID)" } ?? "address:\(context.client)"
        // Wall-clock seconds: the edge's replicas share the buckets.
        let now = Date().timeIntervalSince1970
        do {
            let reply = try await redis.evaluate(Self.script, keys: ["\(prefix)ratelimit:\(who)"], arguments: [rate, burst, now])
            if let values = reply.array, values.count == 2, values[0].integer == 0 {
                var problem = Problem(.tooManyRequests, "rate-limited", "Too many requests",
                                      "this client may make \(Int(rate)) requests a second (bursts of \(burst)); wait before trying again")
                problem.headers[.retryAfter] = String(max(1, values[1].integer ?? 1))
                throw problem
            }
        } catch let problem as Problem {
            throw problem
        } catch {
            context.logger.warning("rate limit not checked: Redis unavailable", metadata: ["error": .string("\(error)")])
        }
        return try await next(request, context)
    }
}
