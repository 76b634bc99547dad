public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle

/// The small HTTP port every process serves: `/healthz` (the process is alive), `/readyz`
/// (connected and working; 503 with the reason when not) and `/metrics` (Prometheus text).
///
/// Three fixed routes need no framework: this is SwiftNIO's HTTP/1.1 pipeline and one handler, so
/// a worker links no web framework (and, with it, not Foundation's internationalisation and ICU,
/// several megabytes of every worker's resident memory).
public struct OpsServer: Service {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    let problem: @Sendable () -> String?

    /// - Parameter problem: why the process is not ready, or nil when it is.
    public init(host: String = "127.0.0.1", port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                problem: @escaping @Sendable () -> String?) {
        self.host = host
        self.port = port
        self.registry = registry
        self.logger = logger
        self.problem = problem
    }

    /// Listens until graceful shutdown (the other services have stopped by then) or cancellation.
    public func run() async throws {
        let respond = OpsRoutes(registry: registry, problem: problem)
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(ChannelOptions.backlog, value: 64)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(OpsHandler(respond: respond))
                    }
                }
                .bind(host: host, port: port)
                .get()
        } catch {
            throw MessagingError("cannot serve /healthz, /readyz and /metrics on \(host):\(port): \(error) "
                                 + "(SHOPFLEET_HTTP_PORT or --port chooses another port; 0 lets the system pick one)")
        }
        logger.info("ops endpoint listening", metadata: ["address": .string(server.localAddress.map { "\($0)" } ?? "?")])
        // Returns when graceful shutdown begins, throws when the task is cancelled: close either way.
        try? await gracefulShutdown()
        try? await server.close()
    }
}

/// What each route answers, away from the channel machinery.
struct OpsRoutes: Sendable {
    struct Answer {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var extraHeaders: [(String, String)] = []
        var body: ByteBuffer
    }

    let registry: PrometheusCollectorRegistry
    let problem: @Sendable () -> String?

    func answer(method: HTTPMethod, path: Substring) -> Answer {
        let known = ["/healthz", "/readyz", "/metrics"]
        guard known.contains(String(path)) else {
            return Answer(status: .notFound, body: ByteBuffer(string: "not found: this port serves \(known.joined(separator: ", "))\n"))
        }
        guard method == .GET || method == .HEAD else {
            return Answer(status: .methodNotAllowed, extraHeaders: [("Allow", "GET, HEAD")],
                          body: ByteBuffer(string: "method \(method.rawValue) not allowed: use GET\n"))
        }
        switch path {
        case "/healthz":
            return Answer(status: .ok, body: ByteBuffer(string: "ok\n"))
        case "/readyz":
            if let problem = problem() {
                return Answer(status: .serviceUnavailable, body: ByteBuffer(string: "not ready: \(problem)\n"))
            }
            return Answer(status: .ok, body: ByteBuffer(string: "ready\n"))
        default:
            return Answer(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                          body: ByteBuffer(bytes: registry.emitToBuffer()))
        }
    }
}

/// One connection: answers each request when its end arrives (bodies are ignored).
final class OpsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: OpsRoutes
    private var request: HTTPRequestHead?

    init(respond: OpsRoutes) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            let path = head.uri.prefix { $0 != "?" }
            let answer = respond.answer(method: head.method, path: path)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: answer.contentType)
            headers.add(name: "Content-Length", value: String(answer.body.readableBytes))
            headers.add(name: "Server", value: "shopfleet")
            for (name, value) in answer.extraHeaders { headers.add(name: name, value: value) }
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))),
                          promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(answer.body))), promise: nil)
            }
            let done = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
            if !keepAlive {
                let channel = context.channel
                done.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
