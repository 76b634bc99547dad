import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
import Logging
@testable import Messaging
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceLifecycle
import ShopfleetTesting
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The ops port over real HTTP on loopback: the three routes, what anything else gets, keep-alive.
@Suite("Ops endpoint")
struct OpsServerTests {
    struct Reply {
        var status: Int
        var body: String
        var headers: HTTPHeaders
    }

    static func request(_ method: HTTPMethod, _ path: String, port: Int) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        return Reply(status: Int(response.status.code), body: String(buffer: body), headers: response.headers)
    }

    /// Runs an ops server on a free port until `body` returns, then shuts it down gracefully.
    static func withServer(problem: @escaping @Sendable () -> String?,
                           _ body: @Sendable (_ port: Int, _ registry: PrometheusCollectorRegistry) async throws -> Void) async throws {
        let registry = PrometheusCollectorRegistry()
        let logger = Logger(label: "ops test")
        let port = TestServers.freePort()
        let server = OpsServer(host: "127.0.0.1", port: port, registry: registry, logger: logger, problem: problem)
        let group = ServiceGroup(services: [server], logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await waitUntil(deadline: .seconds(10)) {
                (try? await request(.GET, "/healthz", port: port))?.status == 200
            }
            do {
                try await body(port, registry)
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test func answersHealthReadinessAndMetrics() async throws {
        let problem = Mutex<String?>("database down")
        try await Self.withServer(problem: { problem.withLock { $0 } }) { port, registry in
            let health = try await Self.request(.GET, "/healthz", port: port)
            #expect(health.status == 200)
            #expect(health.body == "ok\n")

            let notReady = try await Self.request(.GET, "/readyz", port: port)
            #expect(notReady.status == 503)
            #expect(notReady.body == "not ready: database down\n")
            problem.withLock { $0 = nil }
            let ready = try await Self.request(.GET, "/readyz?verbose=1", port: port)
            #expect(ready.status == 200)
            #expect(ready.body == "ready\n")

            registry.makeCounter(descriptor: MetricNameDescriptor(metricName: "ops_test_total", unitName: "", helpText: "a counter of the test"),
                                  labels: [("queue", "q")]).increment(by: Int64(3))
            let metrics = try await Self.request(.GET, "/metrics", port: port)
            #expect(metrics.status == 200)
            #expect(metrics.headers.first(name: "content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(metrics.body.contains("ops_test_total{queue=\"q\"} 3"))
        }
    }

    @Test func unknownPathsAndMethodsAreRefusedClearly() async throws {
        try await Self.withServer(problem: { nil }) { port, _ in
            let missing = try await Self.request(.GET, "/nope", port: port)
            #expect(missing.status == 404)
            #expect(missing.body.contains("/healthz, /readyz, /metrics"))

            let post = try await Self.request(.POST, "/healthz", port: port)
            #expect(post.status == 405)
            #expect(post.headers.first(name: "allow") == "GET, HEAD")

            let head = try await Self.request(.HEAD, "/healthz", port: port)
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(head.headers.first(name: "content-length") == "3")
        }
    }

    @Test func aPortInUseIsAClearError() async throws {
        try await Self.withServer(problem: { nil }) { port, registry in
            let second = OpsServer(host: "127.0.0.1", port: port, registry: registry, logger: Logger(label: "ops test"), problem: { nil })
            do {
                try await second.run()
                Issue.record("a second server listened on the same port")
            } catch {
                let text = "\(error)"
                #expect(text.contains("cannot serve /healthz, /readyz and /metrics on 127.0.0.1:\(port)"), "\(text)")
                #expect(text.contains("SHOPFLEET_HTTP_PORT"), "\(text)")
            }
        }
    }

    @Test func servesManyRequestsOnOneConnection() async throws {
        try await Self.withServer(problem: { nil }) { port, _ in
            // A raw socket: three pipelined requests on one keep-alive connection, then one that closes it.
            let fd = LocalPort.connect(port)
            try #require(fd >= 0)
            defer { close(fd) }
            let requests = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let sent = requests.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
            #expect(sent == requests.utf8.count)
            // Reads until the server closes the connection (it must, after the fourth).
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                received += buffer[0..<n]
            }
            let text = String(decoding: received, as: UTF8.self)
            #expect(text.ranges(of: "HTTP/1.1 200 OK").count == 4)
            #expect(text.contains("ready\n"))
            #expect(text.hasSuffix("ok\n"))
        }
    }
}
