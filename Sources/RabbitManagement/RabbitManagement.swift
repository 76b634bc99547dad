import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
public import Messaging
import NIOCore
import NIOHTTP1

/// The RabbitMQ management HTTP API, for the few calls Shopfleet makes: definitions import and
/// export, virtual hosts and permissions. The URL is `http://user:password@host:port`; the
/// password goes only into the Authorization header, never into errors or logs.
public struct RabbitManagement: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public let baseURL: String
    public let redactedURL: String
    private let authorization: String
    private let timeout: Duration

    public init(url: String, timeout: Duration = .seconds(15)) throws {
        let parsed = try ServerURL(url, schemes: ["http", "https"])
        try self.init(url: url, user: parsed.user ?? "guest", password: parsed.password ?? "guest", timeout: timeout)
    }

    /// The API at `url` (its user and password, if any, ignored) as `user`: the edge signs in with
    /// its own broker user, which has the `management` tag.
    public init(url: String, user: String, password: String, timeout: Duration = .seconds(15)) throws {
        let parsed = try ServerURL(url, schemes: ["http", "https"])
        let port = parsed.port.map { ":\($0)" } ?? ""
        let host = parsed.host.contains(":") ? "[\(parsed.host)]" : parsed.host
        baseURL = "\(parsed.scheme)://\(host)\(port)"
        redactedURL = baseURL
        authorization = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
        self.timeout = timeout
    }

    public static func encodeVHost(_ vhost: String) -> String {
        var out = ""
        for byte in vhost.utf8 {
            let c = Character(UnicodeScalar(byte))
            if c.isLetter && byte < 128 || c.isNumber && byte < 128 || "-._~".contains(c) {
                out.append(c)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// The definitions of one virtual host as the broker has them now.
    public func definitions(vhost: String) async throws -> BrokerDefinitions {
        let data = try await request(.GET, "/api/definitions/\(Self.encodeVHost(vhost))", doing: "read the definitions of vhost '\(vhost)'")
        do {
            return try BrokerDefinitions.decode(data)
        } catch {
            throw Failure(description: "\(redactedURL): the definitions of vhost '\(vhost)' could not be read: \(error)")
        }
    }

    /// Merges definitions into a virtual host (RabbitMQ leaves what is not mentioned alone).
    public func load(_ definitions: BrokerDefinitions, vhost: String) async throws {
        let body = try JSONEncoder().encode(definitions.inVirtualHost(vhost))
        _ = try await request(.POST, "/api/definitions/\(Self.encodeVHost(vhost))", body: body, doing: "load definitions into vhost '\(vhost)'")
    }

    /// Loads the definitions, then removes the bindings between our exchanges and queues that they
    /// no longer have; returns what still differs (nothing, normally).
    public func apply(_ definitions: BrokerDefinitions, vhost: String) async throws -> TopologyDiff {
        try await load(definitions, vhost: vhost)
        for case .extraBinding(let binding) in TopologyDiff(want: definitions, have: try await self.definitions(vhost: vhost)).differences {
            try await deleteBinding(binding, vhost: vhost)
        }
        return TopologyDiff(want: definitions, have: try await self.definitions(vhost: vhost))
    }

    /// Removes a binding without arguments (the only kind the topology makes).
    public func deleteBinding(_ binding: BrokerDefinitions.Binding, vhost: String) async throws {
        let properties = binding.routing_key.isEmpty ? "~" : Self.encodeVHost(binding.routing_key)
        _ = try await request(.DELETE, "/api/bindings/\(Self.encodeVHost(vhost))/e/\(Self.encodeVHost(binding.source))/q/\(Self.encodeVHost(binding.destination))/\(properties)",
                              doing: "remove the binding \(binding.summary)", allowNotFound: true)
    }

    public func createVirtualHost(_ vhost: String) async throws {
        _ = try await request(.PUT, "/api/vhosts/\(Self.encodeVHost(vhost))", body: Data("{}".utf8), doing: "create vhost '\(vhost)'")
    }

    /// Creates `vhost`, gives `user` every right on it and, when given, loads `definitions`: a
    /// virtual host of its own for a test or a benchmark.
    public func createVirtualHost(_ vhost: String, for user: String, loading definitions: BrokerDefinitions?) async throws {
        try await createVirtualHost(vhost)
        try await grantAll(user: user, vhost: vhost)
        if let definitions { try await load(definitions, vhost: vhost) }
    }

    /// `url` (`amqp://user:password@host:port/vhost?query`) with its virtual host replaced.
    public static func amqpURL(_ url: String, virtualHost vhost: String) -> String {
        let schemeEnd = url.firstRange(of: "://")?.upperBound ?? url.startIndex
        let rest = url[schemeEnd...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let query = rest[authorityEnd...].firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
        return String(url[..<authorityEnd]) + "/" + encodeVHost(vhost) + query
    }

    public func deleteVirtualHost(_ vhost: String) async throws {
        _ = try await request(.DELETE, "/api/vhosts/\(Self.encodeVHost(vhost))", doing: "delete vhost '\(vhost)'", allowNotFound: true)
    }

    /// Full configure/write/read rights for `user` on `vhost`.
    public func grantAll(user: String, vhost: String) async throws {
        let body = Data(#"{"configure":".*","write":".*","read":".*"}"#.utf8)
        _ = try await request(.PUT, "/api/permissions/\(Self.encodeVHost(vhost))/\(Self.encodeVHost(user))", body: body,
                              doing: "grant '\(user)' rights on vhost '\(vhost)'")
    }

    /// Creates or updates a user with a password and `tags` (none: no management access;
    /// `management`: its own vhosts' queues, over HTTP what its rights allow). The password travels only in the
    /// request body.
    public func putUser(_ name: String, password: String, tags: String = "") async throws {
        let body = try JSONEncoder().encode(["password": password, "tags": tags])
        _ = try await request(.PUT, "/api/users/\(Self.encodeVHost(name))", body: body, doing: "create or update user '\(name)'")
    }

    public func deleteUser(_ name: String) async throws {
        _ = try await request(.DELETE, "/api/users/\(Self.encodeVHost(name))", doing: "delete user '\(name)'", allowNotFound: true)
    }

    /// Sets a service user's rights on `vhost` to exactly these.
    public func setPermissions(_ permissions: BrokerPermissions, vhost: String) async throws {
        let body = try JSONEncoder().encode(["configure": permissions.configure, "write": permissions.write, "read": permissions.read])
        _ = try await request(.PUT, "/api/permissions/\(Self.encodeVHost(vhost))/\(Self.encodeVHost(permissions.user))", body: body,
                              doing: "set the rights of '\(permissions.user)' on vhost '\(vhost)'")
    }

    /// The rights of `user` on `vhost`, nil when it has none.
    public func permissions(of user: String, vhost: String) async throws -> (configure: String, write: String, read: String)? {
        let data = try await request(.GET, "/api/permissions/\(Self.encodeVHost(vhost))/\(Self.encodeVHost(user))",
                                     doing: "read the rights of '\(user)' on vhost '\(vhost)'", allowNotFound: true)
        guard let object = try? JSONDecoder().decode([String: JSONValue].self, from: data),
              case .string(let configure)? = object["configure"], case .string(let write)? = object["write"],
              case .string(let read)? = object["read"] else { return nil }
        return (configure, write, read)
    }

    public func deleteQueue(_ name: String, vhost: String) async throws {
        _ = try await request(.DELETE, "/api/queues/\(Self.encodeVHost(vhost))/\(Self.encodeVHost(name))",
                              doing: "delete queue '\(name)'", allowNotFound: true)
    }

    /// Every queue of a vhost with its depth and consumers, as the management API last sampled them.
    public func queues(vhost: String) async throws -> [[String: JSONValue]] {
        let data = try await request(.GET, "/api/queues/\(Self.encodeVHost(vhost))?columns=name,messages,messages_ready,messages_unacknowledged,consumers",
                                     doing: "list the queues of vhost '\(vhost)'")
        return try JSONDecoder().decode([[String: JSONValue]].self, from: data)
    }

    /// A queue as the console shows it: depth, consumers and rates.
    public struct QueueOverview: Decodable, Sendable {
        public struct Stats: Decodable, Sendable {
            public struct Rate: Decodable, Sendable { public var rate: Double? }
            public var publish_details: Rate?
            public var deliver_get_details: Rate?
        }
        public var name: String
        public var type: String?
        public var messages: Int?
        public var messages_ready: Int?
        public var messages_unacknowledged: Int?
        public var consumers: Int?
        public var message_stats: Stats?
    }

    public func queueOverview(vhost: String) async throws -> [QueueOverview] {
        let columns = "name,type,messages,messages_ready,messages_unacknowledged,consumers,message_stats.publish_details.rate,message_stats.deliver_get_details.rate"
        let data = try await request(.GET, "/api/queues/\(Self.encodeVHost(vhost))?columns=\(columns)", doing: "list the queues of vhost '\(vhost)'")
        return try JSONDecoder().decode([QueueOverview].self, from: data)
    }

    /// Messages ready in a queue, as the management API last sampled them.
    public func queueInfo(_ name: String, vhost: String) async throws -> [String: JSONValue] {
        let data = try await request(.GET, "/api/queues/\(Self.encodeVHost(vhost))/\(Self.encodeVHost(name))", doing: "read queue '\(name)'")
        return try JSONDecoder().decode([String: JSONValue].self, from: data)
    }

    private func request(_ method: HTTPMethod, _ path: String, body: Data? = nil, doing: String,
                         allowNotFound: Bool = false) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: authorization)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000))
        } catch {
            throw Failure(description: "cannot \(doing): the management API at \(redactedURL) is not reachable (\(error))")
        }
        let bytes = try await response.body.collect(upTo: 64 << 20)
        let data = Data(bytes.readableBytesView)
        if allowNotFound && response.status == .notFound { return data }
        guard (200..<300).contains(Int(response.status.code)) else {
            let text = String(decoding: data.prefix(500), as: UTF8.self)
            let hint = response.status == .unauthorized ? " (check the user and password in SHOPFLEET_AMQP_MANAGEMENT_URL)" : ""
            throw Failure(description: "cannot \(doing): \(redactedURL) answered \(response.status.code) \(response.status.reasonPhrase)\(hint): \(text)")
        }
        return data
    }
}
