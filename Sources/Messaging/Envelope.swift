public import AMQPClient
public import FoundationEssentials
import ClientRuntime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A message of the fleet: a `Codable` body plus the envelope every message carries.
///
/// `type` is `<domain>.<Name>.v<N>`: the domain owns it, and a change that breaks its JSON shape
/// takes a new version (a new type), never an edit of the old one.
public protocol Message: Codable, Sendable {
    static var type: String { get }
}

extension Message {
    /// The part of the type before the first dot: the domain that owns the message.
    public static var domain: String { String(type.prefix { $0 != "." }) }
}

/// A request to one domain to do something; it goes to that domain's command queue.
public protocol Command: Message {
    /// Default `<domain>.commands`.
    static var queue: String { get }
}

extension Command {
    public static var queue: String { "\(domain).commands" }
}

/// A fact a domain announces on its topic (`<domain>.events`), with the type as routing key, so
/// subscriptions filter on `<domain>.#` or `<domain>.<Name>.*`.
public protocol Event: Message {}

extension Event {
    public static var exchange: String { "\(domain).events" }
}

/// A question to one domain, answered over request/reply; it goes to `<domain>.queries`.
public protocol Query: Message {
    associatedtype Reply: Codable & Sendable
    static var queue: String { get }
}

extension Query {
    public static var queue: String { "\(domain).queries" }
}

/// A message that can check its own fields; one that fails is dead-lettered at once (retrying
/// cannot fix it).
public protocol Validatable {
    func validate() throws(ValidationFailure)
}

public struct ValidationFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Thrown by a handler (or raised by the runtime) when processing can never succeed: the message
/// goes to the dead-letter exchange at once instead of through the retry tiers.
public struct PermanentFailure: Error, CustomStringConvertible, Sendable {
    /// Short and stable (`undecodable`, `unknown-type`, `validation`): it becomes `x-error-type`.
    public var kind: String
    public var description: String
    public init(_ kind: String, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// The envelope: AMQP properties and headers around a JSON body.
public struct Envelope: Sendable, Equatable {
    public var messageID: String
    public var type: String
    public var correlationID: String?
    /// Seconds since 1970, as AMQP carries it.
    public var timestamp: UInt64
    public var causationID: String?
    public var sagaID: String?
    public var traceparent: String?
    public var tracestate: String?
    /// 1 for the first delivery; each trip through a retry tier adds one.
    public var attempt: Int
    public var replyTo: String?
    /// A request's deadline, milliseconds since 1970: its caller stops waiting then, so a worker
    /// that takes it later drops it (the `x-deadline` header). Nil for everything but requests.
    public var deadline: Int64?
    public var body: [UInt8]

    public init(messageID: String = UUIDv7.generate(), type: String, correlationID: String? = nil,
                timestamp: UInt64 = UInt64(Date().timeIntervalSince1970), causationID: String? = nil,
                sagaID: String? = nil, traceparent: String? = nil, tracestate: String? = nil, attempt: Int = 1,
                replyTo: String? = nil, deadline: Int64? = nil, body: [UInt8]) {
        self.messageID = messageID
        self.type = type
        self.correlationID = correlationID
        self.timestamp = timestamp
        self.causationID = causationID
        self.sagaID = sagaID
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.attempt = attempt
        self.replyTo = replyTo
        self.deadline = deadline
        self.body = body
    }

    /// An envelope for `message`, JSON-encoded.
    public init<M: Message>(_ message: M, sagaID: String? = nil, correlationID: String? = nil) throws {
        self.init(type: M.type, correlationID: correlationID, sagaID: sagaID, body: Array(try MessageCodec.encode(message)))
    }

    public enum Header {
        public static let causationID = "causation-id"
        public static let sagaID = "saga-id"
        public static let traceparent = "traceparent"
        public static let tracestate = "tracestate"
        public static let attempt = "attempt"
        public static let error = "x-error"
        public static let errorType = "x-error-type"
        public static let failedQueue = "x-failed-queue"
        public static let failedAt = "x-failed-at"
        public static let replayedFrom = "x-replayed-from"
        /// The exchange and routing key the message was first published with, recorded on its first
        /// failure (a retry tier or the dead-letter exchange changes both).
        public static let originalExchange = "x-original-exchange"
        public static let originalRoutingKey = "x-original-routing-key"
        /// A request's deadline (milliseconds since 1970), set by its caller.
        public static let deadline = "x-deadline"
    }

    /// Reads the envelope of a delivery. A message without an id or a type is not one of ours:
    /// a ``PermanentFailure`` says which is missing.
    public init(delivery message: AMQPMessage) throws(PermanentFailure) {
        let p = message.properties
        guard let id = p.messageID, !id.isEmpty else {
            throw PermanentFailure("missing-message-id", "the message has no message_id property")
        }
        guard let type = p.type, !type.isEmpty else {
            throw PermanentFailure("missing-type", "the message has no type property")
        }
        let headers = p.headers ?? [:]
        self.init(
            messageID: id, type: type, correlationID: p.correlationID, timestamp: p.timestamp ?? 0,
            causationID: headers[Header.causationID]?.string, sagaID: headers[Header.sagaID]?.string,
            traceparent: headers[Header.traceparent]?.string, tracestate: headers[Header.tracestate]?.string,
            attempt: headers[Header.attempt]?.int.map(Int.init) ?? 1, replyTo: p.replyTo,
            deadline: headers[Header.deadline]?.int, body: message.body)
    }

    /// The AMQP properties for publishing: persistent, JSON, the envelope's fields and headers.
    public var properties: AMQPProperties {
        var headers: AMQPTable = [Header.attempt: .int(Int64(attempt))]
        if let causationID { headers[Header.causationID] = .string(causationID) }
        if let sagaID { headers[Header.sagaID] = .string(sagaID) }
        if let traceparent { headers[Header.traceparent] = .string(traceparent) }
        if let tracestate { headers[Header.tracestate] = .string(tracestate) }
        if let deadline { headers[Header.deadline] = .int(deadline) }
        return AMQPProperties(contentType: "application/json", headers: headers, persistent: true,
                              correlationID: correlationID, replyTo: replyTo, messageID: messageID,
                              timestamp: timestamp, type: type)
    }

    /// The envelope of a message sent while handling this one: same correlation, saga and trace,
    /// caused by this message.
    public func child(type: String, body: [UInt8]) -> Envelope {
        Envelope(type: type, correlationID: correlationID ?? messageID, causationID: messageID, sagaID: sagaID,
                 traceparent: traceparent.flatMap(TraceParent.init)?.child().description ?? TraceParent.random().description,
                 tracestate: tracestate, body: body)
    }

    /// Whether a request's caller has stopped waiting: its deadline passed more than `leeway`
    /// ago. The deadline is the caller's clock and `now` the worker's; the leeway keeps a worker
    /// whose clock runs a little ahead from dropping a request someone still waits for.
    public func expired(now: Date = Date(), leeway: Duration = .seconds(1)) -> Bool {
        guard let deadline else { return false }
        return Int64(now.timeIntervalSince1970 * 1000) > deadline + Int64(leeway.components.seconds * 1000)
    }

    /// The trace id of `traceparent`, for logs.
    public var traceID: String? { traceparent.flatMap(TraceParent.init)?.traceID }
}

/// JSON for message bodies: ISO 8601 dates, sorted keys (the same message gives the same bytes).
public enum MessageCodec {
    public static func encode<M: Encodable>(_ message: M) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(message)
    }

    /// Decodes a body; what is wrong with it becomes a ``PermanentFailure`` (`undecodable`) naming
    /// the type and the field.
    public static func decode<M: Decodable>(_ type: M.Type, from body: [UInt8], typeName: String) throws(PermanentFailure) -> M {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(M.self, from: Data(body))
        } catch let error as DecodingError {
            throw PermanentFailure("undecodable", "the body is not a valid \(typeName): \(error.summary)")
        } catch {
            throw PermanentFailure("undecodable", "the body is not a valid \(typeName): \(error)")
        }
    }
}

/// Time-ordered UUIDs (RFC 9562 version 7): 48 bits of Unix milliseconds, then random bits, so ids
/// sort by creation time and index well.
public enum UUIDv7 {
    public static func generate(at date: Date = Date()) -> String {
        let ms = UInt64(max(0, date.timeIntervalSince1970 * 1000))
        var bytes = RandomBytes.sixteen()
        withUnsafeMutableBytes(of: &bytes) { raw in
            for i in 0..<6 { raw[i] = UInt8(truncatingIfNeeded: ms >> (8 * (5 - i))) }
            raw[6] = 0x70 | (raw[6] & 0x0F)
            raw[8] = 0x80 | (raw[8] & 0x3F)
        }
        return withUnsafeBytes(of: &bytes) { raw in
            String(unsafeUninitializedCapacity: 36) { out in
                var o = 0
                for (i, byte) in raw.enumerated() {
                    if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                    out[o] = HexDigits.digit(byte >> 4)
                    out[o + 1] = HexDigits.digit(byte & 0x0F)
                    o += 2
                }
                return o
            }
        }
    }
}

/// Random bytes for ids, read from the kernel's CSPRNG 4 KB at a time instead of one getrandom(2)
/// call per 8 bytes (a message sent costs two or three ids).
enum RandomBytes {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
    }
    private static let pool = Mutex(Pool())
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    /// 16 random bytes.
    static func sixteen() -> (UInt64, UInt64) {
        pool.withLock { pool in
            if pool.next + 16 > pool.bytes.count {
                let count = pool.bytes.count
                let filled = urandom >= 0 && pool.bytes.withUnsafeMutableBytes { read(urandom, $0.baseAddress, count) } == count
                if !filled {
                    var generator = SystemRandomNumberGenerator()
                    pool.bytes.withUnsafeMutableBytes { raw in
                        for offset in stride(from: 0, to: count, by: 8) {
                            raw.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
                        }
                    }
                }
                pool.next = 0
            }
            defer { pool.next += 16 }
            return pool.bytes.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: pool.next, as: UInt64.self),
                 raw.loadUnaligned(fromByteOffset: pool.next + 8, as: UInt64.self))
            }
        }
    }

    /// `count` (8 or 16) random bytes as lowercase hex, never all zero.
    static func hex(_ count: Int) -> String {
        var bytes = RandomBytes.sixteen()
        return withUnsafeMutableBytes(of: &bytes) { raw in
            if raw[..<count].allSatisfy({ $0 == 0 }) { raw[count - 1] = 1 }
            return UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count).lowercaseHex
        }
    }
}

/// W3C `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
public struct TraceParent: Sendable, Equatable, CustomStringConvertible {
    public var traceID: String
    public var parentID: String
    public var flags: String

    public init?(_ text: String) {
        // `vv-<32>-<16>-ff`: 55 bytes, dashes at 2, 35 and 52, hex digits elsewhere; the trace and
        // parent ids not all zero. Checked on the UTF-8 bytes (this runs for every message).
        let utf8 = Array(text.utf8)
        guard utf8.count == 55, utf8[2] == UInt8(ascii: "-"), utf8[35] == UInt8(ascii: "-"), utf8[52] == UInt8(ascii: "-") else {
            return nil
        }
        func isHex(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20)
        }
        for (index, byte) in utf8.enumerated() where index != 2 && index != 35 && index != 52 {
            guard isHex(byte) else { return nil }
        }
        func lowered(_ range: Range<Int>) -> String { String(decoding: utf8[range].map { $0 > UInt8(ascii: "9") ? $0 | 0x20 : $0 }, as: UTF8.self) }
        guard utf8[3..<35].contains(where: { $0 != UInt8(ascii: "0") }), utf8[36..<52].contains(where: { $0 != UInt8(ascii: "0") }) else {
            return nil
        }
        traceID = lowered(3..<35)
        parentID = lowered(36..<52)
        flags = String(decoding: utf8[53..<55], as: UTF8.self)
    }

    init(traceID: String, parentID: String, flags: String) {
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    public static func random() -> TraceParent {
        TraceParent(traceID: randomHex(16), parentID: randomHex(8), flags: "01")
    }

    /// The same trace, a new span.
    public func child() -> TraceParent { TraceParent(traceID: traceID, parentID: Self.randomHex(8), flags: flags) }

    public var description: String { "00-\(traceID)-\(parentID)-\(flags)" }

    /// `bytes` (8 or 16) random bytes as lowercase hex, never all zero.
    static func randomHex(_ bytes: Int) -> String { RandomBytes.hex(bytes) }
}

extension DecodingError {
    /// Where in the JSON and what went wrong, without the type dump of the default description.
    public var summary: String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the top level" : keys.joined(separator: ".")
        }
        switch self {
        case .keyNotFound(let key, let context):
            return "missing '\(key.stringValue)' in \(path(context))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context)): \(context.debugDescription)"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(self)"
        }
    }
}

extension String {
    /// `"7".leftPadded(to: 2) == "07"`.
    public func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
