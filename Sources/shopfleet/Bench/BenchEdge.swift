import ArgumentParser
import AsyncHTTPClient
import ClientRuntime
import Contracts
import FoundationEssentials
import Messaging
import NIOCore
import NIOHTTP1
import Synchronization
import WorkerHost

/// `shopfleet bench edge`: requests a second and latency through the HTTP edge, each beside a
/// trivial route of the same server measured in the same run: `GET /`, the storefront page, answered
/// from memory (`/healthz` is on the ops port since the ops and public ports were split).
struct BenchEdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge",
        abstract: "GET /v1/products/{id} and POST /v1/orders through the edge, beside a trivial route of the same server.",
        discussion: """
            Starts the whole fleet from this binary (as bench checkout does) plus the edge, and loads it with a
            generator of our own (async-http-client, keep-alive connections) in this process: it shares the two
            cores with the fleet, as wrk would.
            """)

    @Option(help: "Seconds per measured phase.") var seconds = 8
    @Option(help: "Requests in flight.") var concurrency = 32
    @Flag(help: "Print JSON rows.") var json = false

    func run() async throws {
        let config = try ShopfleetConfiguration.current()
        guard let python = ProcessInfo.processInfo.environment["SHOPFLEET_PYTHON"] else {
            throw ValidationError("SHOPFLEET_PYTHON is not set: eval \"$(scripts/servers.sh env test)\" first")
        }
        let port = Int.random(in: 21_000...31_000)
        let bench = try await CheckoutBench.start(config: config, python: python, edgePort: port)
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: .init(connectionPool: .init(idleTimeout: .seconds(60),
                                                                           concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency)))
        do {
            let load = Load(client: client, base: "http://127.0.0.1:\(port)", concurrency: concurrency, duration: .seconds(seconds))
            let rows = try await measure(load, products: bench.products.map(\.id))
            try await client.shutdown()
            await bench.stop()
            try BenchOutput.print(rows, json: json)
        } catch {
            try? await client.shutdown()
            bench.printLogs()
            await bench.stop()
            throw error
        }
    }

    func measure(_ load: Load, products: [String]) async throws -> [BenchRow] {
        // Warm up every path once.
        _ = try await load.run(.seconds(2)) { _ in try await load.get("/v1/products/\(products.randomElement()!)") }
        let trivial = try await load.run { _ in try await load.get("/") }
        let product = try await load.run { _ in try await load.get("/v1/products/\(products.randomElement()!)") }
        // Half the rate it reached: the latency a lightly loaded edge gives.
        let half = try await load.run(rate: product.rate / 2) { _ in try await load.get("/v1/products/\(products.randomElement()!)") }

        // Orders: a customer per connection, each filling its cart before each order (only the POST is timed).
        var tokens: [String] = []
        for index in 0..<load.concurrency {
            let email = "bench-\(index)-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await load.post("/v1/auth/register", #"{"email": "\#(email)", "password": "bench password", "name": "Bench"}"#, expect: 201)
            let login = try await load.post("/v1/auth/login", #"{"email": "\#(email)", "password": "bench password"}"#, expect: 200)
            let fields = try JSONDecoder().decode([String: JSONValue].self, from: Data(login.utf8))
            guard case .string(let token)? = fields["accessToken"] else { throw ValidationError("login answered \(login)") }
            tokens.append(token)
        }
        let customers = tokens
        let order = #"{"paymentMethod": "pm_card_visa", "shippingAddress": {"name": "B", "line1": "1 Road", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
        let orders = try await load.run { worker in
            let token = customers[worker % customers.count]
            // The previous order's confirmation may take its product out of the cart just refilled
            // (the same product drawn twice): then fill it again.
            while true {
                _ = try await load.send(.PUT, "/v1/cart/lines/\(products.randomElement()!)", #"{"quantity": 1}"#, token: token, expect: 200, timed: false)
                do {
                    try await load.send(.POST, "/v1/orders", order, token: token, headers: [("Idempotency-Key", UUIDv7.generate())], expect: 202)
                    return
                } catch Load.Unexpected.status(409) {
                    continue
                }
            }
        }

        return [
            BenchRow(metric: "edge.trivial", unit: "req/s", value: trivial.rate, baseline: trivial.rate, baselineName: "GET / (itself)"),
            BenchRow(metric: "edge.get_product", unit: "req/s", value: product.rate, baseline: trivial.rate,
                     baselineName: "GET /, same server and run (target ≥ 0.25)"),
            BenchRow(metric: "edge.get_product_p50", unit: "ms", value: product.percentile(0.5), baseline: trivial.percentile(0.5),
                     baselineName: "GET / p50 at its maximum rate"),
            BenchRow(metric: "edge.get_product_p99", unit: "ms", value: product.percentile(0.99), baseline: trivial.percentile(0.99),
                     baselineName: "GET / p99 at its maximum rate"),
            BenchRow(metric: "edge.get_product_p99_at_half_rate", unit: "ms", value: half.percentile(0.99), baseline: 10,
                     baselineName: "the 10 ms target, at \(Int(product.rate / 2)) req/s"),
            BenchRow(metric: "edge.post_order", unit: "req/s", value: orders.rate, baseline: trivial.rate,
                     baselineName: "GET /, same server and run"),
            BenchRow(metric: "edge.post_order_p50", unit: "ms", value: orders.percentile(0.5), baseline: trivial.percentile(0.5),
                     baselineName: "GET / p50"),
            BenchRow(metric: "edge.post_order_p99", unit: "ms", value: orders.percentile(0.99), baseline: trivial.percentile(0.99),
                     baselineName: "GET / p99"),
        ]
    }
}

/// A closed-loop load generator: `concurrency` workers, each sending its next request when the
/// last one answered (or, with a `rate`, at that many requests a second in all).
struct Load: Sendable {
    let client: HTTPClient
    let base: String
    let concurrency: Int
    let duration: Duration

    struct Result {
        var count: Int
        var elapsed: Duration
        var latencies: [Double]
        var rate: Double { Double(count) / (CheckoutBench.milliseconds(elapsed) / 1000) }
        func percentile(_ p: Double) -> Double { CheckoutBench.percentile(latencies, p) }
    }

    final class Timings: Sendable {
        let values = Mutex<[Double]>([])
        func add(_ value: Double) { values.withLock { $0.append(value) } }
    }

    /// Runs `request` from every worker for the duration; a request records its own latency when
    /// it is the timed one (see `send`).
    func run(_ length: Duration? = nil, rate: Double? = nil, _ request: @escaping @Sendable (Int) async throws -> Void) async throws -> Result {
        let timings = Timings()
        let start = ContinuousClock.now
        let end = start + (length ?? duration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var sent = 0
                    while ContinuousClock.now < end {
                        if let rate {
                            // Worker `w` sends its n-th request at (n * concurrency + w) / rate seconds.
                            let due = start + .milliseconds(Int(Double(sent * concurrency + worker) / rate * 1000))
                            if due > end { break }
                            try await Task.sleep(until: due)
                        }
                        try await Timing.$sink.withValue(timings) { try await request(worker) }
                        sent += 1
                    }
                }
            }
            try await group.waitForAll()
        }
        let latencies = timings.values.withLock { $0 }.sorted()
        return Result(count: latencies.count, elapsed: .now - start, latencies: latencies)
    }

    enum Unexpected: Error { case status(Int) }

    enum Timing {
        @TaskLocal static var sink: Timings?
    }

    func get(_ path: String) async throws {
        try await send(.GET, path, nil, expect: 200)
    }

    func post(_ path: String, _ body: String, expect: Int) async throws -> String {
        try await send(.POST, path, body, expect: expect, timed: false)
    }

    @discardableResult
    func send(_ method: HTTPMethod, _ path: String, _ body: String?, token: String? = nil, headers: [(String, String)] = [],
              expect: Int, timed: Bool = true) async throws -> String {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let started = ContinuousClock.now
        let response = try await client.execute(request, timeout: .seconds(30))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        if timed { Timing.sink?.add(CheckoutBench.milliseconds(.now - started)) }
        guard Int(response.status.code) == expect else {
            if response.status.code == 409 { throw Unexpected.status(409) }
            throw ValidationError("\(method) \(path) answered \(response.status.code), not \(expect): \(text.prefix(300))")
        }
        return text
    }
}
