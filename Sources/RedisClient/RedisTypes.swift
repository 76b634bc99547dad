import ClientRuntime
public import FoundationEssentials

/// A reply, as RESP2 has them. Bulk strings stay bytes (binary-safe); use ``string`` for text.
public enum RedisReply: Sendable, Equatable, CustomStringConvertible {
    case bulk([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case array([RedisReply])
    case error(String)

    /// Bulk or status text.
    public var string: String? {
        switch self {
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let b) = self { return b }
        return nil
    }

    public var integer: Int64? {
        switch self {
        case .integer(let i): return i
        case .bulk: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var isNull: Bool { self == .null }

    public var description: String {
        switch self {
        case .bulk(let b): return "\"\(String(decoding: b, as: UTF8.self))\""
        case .status(let s): return s
        case .integer(let i): return String(i)
        case .null: return "(nil)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .error(let e): return "(error) \(e)"
        }
    }
}

/// Anything that can be one argument of a command, as bytes.
public protocol RedisArgument: Sendable {
    var redisBytes: [UInt8] { get }
}

extension String: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Substring: RedisArgument { public var redisBytes: [UInt8] { Array(utf8) } }
extension Int: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Int64: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Double: RedisArgument { public var redisBytes: [UInt8] { Array(String(self).utf8) } }
extension Array: RedisArgument where Element == UInt8 { public var redisBytes: [UInt8] { self } }
extension Data: RedisArgument { public var redisBytes: [UInt8] { Array(self) } }

/// A command: name and arguments, held as the RESP bytes that go on the wire
/// (`*<argc>\r\n` then `$<len>\r\n<bytes>\r\n` per argument; binary-safe by construction).
/// Encoding happens once, when the command is made; a pipeline is the concatenation.
public struct RedisCommand: Sendable {
    public let resp: [UInt8]
    private let rawName: String
    /// The command name only: arguments may hold secrets or personal data and are never logged.
    public var name: String { rawName.uppercased() }

    public init(_ name: String, _ arguments: [any RedisArgument]) {
        self.rawName = name
        let bytes = arguments.map(\.redisBytes)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.reduce(name.utf8.count + 32) { $0 + $1.count + 16 })
        Self.appendHeader(&out, UInt8(ascii: "*"), bytes.count + 1)
        Self.appendArgument(&out, name.utf8)
        for argument in bytes { Self.appendArgument(&out, argument) }
        self.resp = out
    }

    public init(_ name: String, _ arguments: any RedisArgument...) { self.init(name, arguments) }

    private static func appendArgument(_ out: inout [UInt8], _ argument: some Collection<UInt8>) {
        appendHeader(&out, UInt8(ascii: "$"), argument.count)
        out.append(contentsOf: argument)
        out.append(13)
        out.append(10)
    }

    /// `<prefix><decimal>\r\n`, without going through `String`.
    private static func appendHeader(_ out: inout [UInt8], _ prefix: UInt8, _ value: Int) {
        out.append(prefix)
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var n = value
            var i = buffer.count
            repeat {
                i -= 1
                buffer[i] = UInt8(ascii: "0") + UInt8(n % 10)
                n /= 10
            } while n > 0
            out.append(contentsOf: buffer[i...])
        }
        out.append(13)
        out.append(10)
    }
}

/// A Lua script run with EVALSHA, falling back to EVAL when the server does not know it yet.
public struct RedisScript: Sendable {
    public let source: String
    public let sha1: String
    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hex(Array(source.utf8))
    }
}

public struct RedisError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidConfiguration, connectionFailed, authenticationFailed, connectionLost
            case server, poolTimeout, closed, unexpectedReply
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// No connection (server not running, unreachable, timed out).
        public static let connectionFailed = Code(.connectionFailed)
        /// Wrong or missing password (`WRONGPASS`, `NOAUTH`).
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The connection broke or a reply timed out; the command may or may not have run.
        public static let connectionLost = Code(.connectionLost)
        /// The server answered with an error reply.
        public static let server = Code(.server)
        public static let poolTimeout = Code(.poolTimeout)
        public static let closed = Code(.closed)
        /// A reply of an unexpected shape.
        public static let unexpectedReply = Code(.unexpectedReply)
        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    public var host: String
    public var port: Int
    /// The command's name (never its arguments).
    public var command: String?

    public init(_ code: Code, _ message: String, host: String, port: Int, command: String? = nil) {
        self.code = code
        self.message = message
        self.host = host
        self.port = port
        self.command = command
    }

    public var description: String {
        "Redis \(host):\(port): \(code): \(message)" + (command.map { " (command \($0))" } ?? "")
    }
}

/// `redis://[:password@]host[:port][/db]` (also `redis://user:password@…` for ACL users).
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    public var connectTimeout: Duration
    /// How long a reply may take before the connection is considered lost.
    public var commandTimeout: Duration
    /// How long the connection's thread keeps polling for a reply (or a job) before it sleeps; zero:
    /// it sleeps at once. Spinning spares a caller on Swift's pool the cost of waking that thread
    /// for its reply, at the price of CPU time. Default: ``defaultSpin``.
    public var spin: Duration

    /// `SHOPFLEET_REDIS_SPIN_US` (microseconds), else `SHOPFLEET_THREAD_SPIN_US`, else 0.
    public static let defaultSpin: Duration =
        ConnectionThread.spin(fromEnvironment: "SHOPFLEET_REDIS_SPIN_US") ?? ConnectionThread.defaultSpin

    public init(host: String = "localhost", port: Int = 6379, username: String? = nil, password: String? = nil,
                database: Int = 0, connectTimeout: Duration = .seconds(5), commandTimeout: Duration = .seconds(10),
                spin: Duration = RedisConfiguration.defaultSpin) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.spin = spin
    }

    public init(url: String) throws {
        let parsed: ServerURL
        do {
            parsed = try ServerURL(url, schemes: ["redis"])
        } catch let error as ServerURL.ParseError {
            throw RedisError(.invalidConfiguration, error.description, host: "?", port: 0)
        }
        var database = 0
        if !parsed.path.isEmpty {
            guard let db = Int(parsed.path), db >= 0 else {
                throw RedisError(.invalidConfiguration, "database '\(parsed.path)' in \(ServerURL.redact(url)) is not a number",
                                 host: parsed.host, port: parsed.port ?? 6379)
            }
            database = db
        }
        self.init(host: parsed.host, port: parsed.port ?? 6379, username: parsed.user,
                  password: parsed.password, database: database)
    }

    public var description: String { "redis://\(host):\(port)/\(database)" }
}
