import AMQPClient
import Auth
import Edge
import FoundationEssentials
import Hummingbird
import Logging
@testable import Messaging
import Prometheus
import RedisClient
import ShopfleetTesting
import Testing

/// `openapi.yaml` describes every `/v1` route the edge serves, and nothing it does not.
@Suite("OpenAPI document")
struct OpenAPITests {
    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteExists() async throws {
        let text = try String(contentsOfFile: TestServers.repositoryRoot + "/openapi.yaml", encoding: .utf8)
        let document = try YAMLSubset.parse(text)
        guard case .object(let root) = document, case .string(let version)? = root["openapi"], case .object(let paths)? = root["paths"] else {
            Issue.record("openapi.yaml has no openapi version or paths")
            return
        }
        #expect(version == "3.1.0")
        var documented = Set<String>()
        for (path, item) in paths {
            guard case .object(let methods) = item else { continue }
            for method in methods.keys where ["get", "put", "post", "delete", "patch"].contains(method) {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }

        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: try TestServers.amqpURL(), connectionName: "openapi test"))
        let redis = RedisClient(configuration: try RedisConfiguration(url: try TestServers.redisURL()), maximumConnections: 1)
        let edge = try await EdgeServer(amqp: amqp, redis: redis, tokens: try await CheckoutFleet.verifier(),
                                        passwords: PasswordHasher(threads: 1, cost: 4), settings: .init(openAPIDocument: text),
                                        logger: Logger(label: "openapi test"))
        let served = Set(edge.router(registry: PrometheusCollectorRegistry()).routes.compactMap { route -> String? in
            let path = "\(route.path)".split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
            let full = path.hasPrefix("/") ? path : "/" + path
            return full.hasPrefix("/v1/") || full == "/v1" ? "\(route.method) \(full)" : nil
        })
        #expect(served.subtracting(documented).sorted() == [], "routes missing from openapi.yaml")
        #expect(documented.subtracting(served).sorted() == [], "documented routes the edge does not serve")
        #expect(served.count >= 15)
        await amqp.close()
        await redis.close()
    }
}
