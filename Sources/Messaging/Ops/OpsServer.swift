import Hummingbird
public import Logging
import NIOCore
public import Prometheus
public import ServiceLifecycle

/// The small HTTP port every process serves: `/healthz` (the process is alive), `/readyz`
/// (connected and working; 503 with the reason when not) and `/metrics` (Prometheus text).
public struct OpsServer: Service {
    let application: Application<RouterResponder<BasicRequestContext>>

    /// - Parameter problem: why the process is not ready, or nil when it is.
    public init(host: String = "0.0.0.0", port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
                problem: @escaping @Sendable () -> String?) {
        let router = Router()
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ -> Response in
            if let problem = problem() {
                return Response(status: .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                                body: ResponseBody(byteBuffer: ByteBuffer(string: "not ready: \(problem)\n")))
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: "ready\n")))
        }
        router.get("metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "shopfleet"),
            onServerRunning: { channel in
                logger.info("ops endpoint listening", metadata: ["address": .string("\(channel.localAddress.map { "\($0)" } ?? "?")")])
            },
            logger: quiet)
    }

    public func run() async throws {
        try await application.run()
    }
}
