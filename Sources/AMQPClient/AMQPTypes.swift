public import ClientRuntime

/// Where and how to connect: `amqp://user:password@host:port/vhost?heartbeat=30&connection_timeout=5000`.
/// An empty path is the default vhost `/`; `%2F` spells it explicitly.
public struct AMQPConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String
    /// Heartbeat interval in seconds (0: none). Both sides drop the connection after two missed.
    public var heartbeat: Int
    public var connectTimeout: Duration
    /// Longest wait for a broker's answer to a synchronous method (declare, consume, …).
    public var rpcTimeout: Duration
    /// Shown in the management UI's connection list.
    public var connectionName: String

    public init(host: String = "localhost", port: Int = 5672, user: String = "guest", password: String = "guest",
                vhost: String = "/", heartbeat: Int = 30, connectTimeout: Duration = .seconds(5),
                rpcTimeout: Duration = .seconds(30), connectionName: String = "shopfleet") {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.vhost = vhost
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.rpcTimeout = rpcTimeout
        self.connectionName = connectionName
    }

    public init(url: String, connectionName: String = "shopfleet") throws {
        let parsed: ServerURL
        do {
            parsed = try ServerURL(url, schemes: ["amqp"])
        } catch let error as ServerURL.ParseError {
            throw AMQPError(.invalidConfiguration, error.description, host: "?", port: 0)
        }
        var heartbeat = 30
        if let text = parsed.queryValue("heartbeat") {
            guard let value = Int(text), (0...65535).contains(value) else {
                throw AMQPError(.invalidConfiguration, "heartbeat '\(text)' in \(ServerURL.redact(url)) is not 0…65535 seconds",
                                host: parsed.host, port: parsed.port ?? 5672)
            }
            heartbeat = value
        }
        var connectTimeout = Duration.seconds(5)
        if let text = parsed.queryValue("connection_timeout") {
            guard let ms = Int(text), ms > 0 else {
                throw AMQPError(.invalidConfiguration, "connection_timeout '\(text)' is not a positive number of milliseconds",
                                host: parsed.host, port: parsed.port ?? 5672)
            }
            connectTimeout = .milliseconds(ms)
        }
        self.init(host: parsed.host, port: parsed.port ?? 5672, user: parsed.user ?? "guest",
                  password: parsed.password ?? "guest", vhost: parsed.path.isEmpty ? "/" : parsed.path,
                  heartbeat: heartbeat, connectTimeout: connectTimeout, connectionName: connectionName)
    }

    /// Safe to log: no password.
    public var description: String { "amqp://\(user)@\(host):\(port)/\(vhost == "/" ? "%2F" : vhost)" }
}

public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidConfiguration, connectionFailed, authenticationFailed, connectionLost, notConnected
            case channelClosed, connectionClosed, nacked, unroutable, timeout, closed, consumerCancelled
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The broker could not be reached (not running, unreachable, timed out).
        public static let connectionFailed = Code(.connectionFailed)
        /// The broker refused the user name or password (ACCESS_REFUSED).
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The connection dropped while this operation was under way; an unconfirmed publish must be
        /// sent again. The connection recovers by itself.
        public static let connectionLost = Code(.connectionLost)
        /// The connection is down and recovering; nothing was sent. Try again later.
        public static let notConnected = Code(.notConnected)
        /// The broker closed the channel (e.g. 404 NOT_FOUND for a missing queue, 406 PRECONDITION_FAILED).
        public static let channelClosed = Code(.channelClosed)
        /// The broker closed the connection (e.g. 320 CONNECTION_FORCED by an operator, 530 NOT_ALLOWED).
        public static let connectionClosed = Code(.connectionClosed)
        /// The broker refused to take responsibility for a published message (basic.nack).
        public static let nacked = Code(.nacked)
        /// A mandatory message matched no queue and came back (basic.return).
        public static let unroutable = Code(.unroutable)
        /// No reply within the deadline (request/reply).
        public static let timeout = Code(.timeout)
        /// The connection or channel was closed by this process.
        public static let closed = Code(.closed)
        /// The broker cancelled the consumer (its queue was deleted).
        public static let consumerCancelled = Code(.consumerCancelled)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    public var host: String
    public var port: Int
    /// The AMQP reply code when the broker closed something (404, 406, 320 …).
    public var replyCode: UInt16?

    public init(_ code: Code, _ message: String, host: String, port: Int, replyCode: UInt16? = nil) {
        self.code = code
        self.message = message
        self.host = host
        self.port = port
        self.replyCode = replyCode
    }

    public var description: String {
        "AMQP \(host):\(port): \(code): \(message)" + (replyCode.map { " (reply code \($0))" } ?? "")
    }
}

/// A value in an AMQP field table (headers, arguments).
public indirect enum AMQPFieldValue: Sendable, Hashable, CustomStringConvertible {
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case bytes([UInt8])
    case timestamp(UInt64)
    case array([AMQPFieldValue])
    case table(AMQPTable)
    case void

    public var string: String? {
        switch self {
        case .string(let s): return s
        case .bytes(let b): return String(decoding: b, as: UTF8.self)
        default: return nil
        }
    }

    public var int: Int64? {
        switch self {
        case .int(let i): return i
        case .timestamp(let t): return Int64(t)
        case .string(let s): return Int64(s)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        case .string(let s): return "\"\(s)\""
        case .bytes(let b): return "<\(b.count) bytes>"
        case .timestamp(let t): return "@\(t)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .table(let t): return "{" + t.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .void: return "void"
        }
    }
}

public typealias AMQPTable = [String: AMQPFieldValue]

extension AMQPFieldValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// Message properties (AMQP 0-9-1 basic properties).
public struct AMQPProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    /// Delivery mode 2: written to disk by the broker. Shopfleet's messages are persistent.
    public var persistent: Bool
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    /// Per-message TTL in milliseconds, as a string (AMQP's own choice).
    public var expiration: String?
    public var messageID: String?
    /// Seconds since 1970.
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?

    public init(contentType: String? = nil, contentEncoding: String? = nil, headers: AMQPTable? = nil,
                persistent: Bool = true, priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil,
                expiration: String? = nil, messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil,
                userID: String? = nil, appID: String? = nil) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.persistent = persistent
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.userID = userID
        self.appID = appID
    }
}

/// A message as the broker delivered it (consume, get, or a return).
public struct AMQPMessage: Sendable {
    public var body: [UInt8]
    public var properties: AMQPProperties
    public var exchange: String
    public var routingKey: String

    public var bodyString: String { String(decoding: body, as: UTF8.self) }

    public init(body: [UInt8], properties: AMQPProperties, exchange: String, routingKey: String) {
        self.body = body
        self.properties = properties
        self.exchange = exchange
        self.routingKey = routingKey
    }
}

/// Events a connection reports about itself.
public enum AMQPConnectionEvent: Sendable, Equatable {
    /// The connection dropped; unconfirmed publishes failed with `.connectionLost`; reconnecting.
    case disconnected(reason: String)
    /// Back: channels reopened, QoS and confirms re-applied, consumers consuming again.
    case recovered(attempts: Int)
    /// The broker stopped reading from us (resource alarm), and resumed.
    case blocked(reason: String)
    case unblocked
}

public enum ExchangeType: String, Sendable {
    case direct, fanout, topic, headers
}
