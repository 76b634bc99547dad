public import AMQPClient
public import FoundationEssentials
public import Messaging

/// What one delivery from the dead-letter queue says about a failure: which message, from which
/// queue, why, when, after how many attempts. Read from the worker's `x-error*` headers, or, for a
/// message the broker dead-lettered itself (delivery limit), from `x-death`.
public struct DeadLetterReceipt: Sendable, Equatable {
    /// The message's own id; the store gives a message without one `sha256:` of its type and body.
    public var messageID: String?
    public var type: String
    public var failedQueue: String
    /// Where the message was first published.
    public var exchange: String
    public var routingKey: String
    public var reason: String
    /// Short and stable: `retries-exhausted`, `undecodable`, `unknown-type`, `missing-type`,
    /// `validation`, `delivery-limit`, …
    public var errorType: String
    public var attempts: Int
    public var failedAt: Date
    public var sagaID: String?
    public var properties: [String: JSONValue]
    public var headers: [String: JSONValue]
    public var body: [UInt8]

    /// Reads a dead letter. `deliveryLimit` says how many deliveries a queue allows (for the
    /// attempts of a message the broker dead-lettered), `now` stands in for a missing time.
    public init(_ message: AMQPMessage, deliveryLimit: (String) -> Int?, now: Date = Date()) {
        let p = message.properties
        let table = p.headers ?? [:]
        headers = table.mapValues(JSONValue.init)
        properties = Self.properties(p)
        body = message.body
        type = p.type.flatMap { $0.isEmpty ? nil : $0 } ?? "(none)"
        sagaID = table[Envelope.Header.sagaID]?.string
        let death = Self.lastDeath(table)

        if let queue = table[Envelope.Header.failedQueue]?.string {
            // The worker dead-lettered it, and said why.
            failedQueue = queue
            reason = table[Envelope.Header.error]?.string ?? "(the worker gave no reason)"
            errorType = table[Envelope.Header.errorType]?.string ?? "unknown"
            attempts = Int(table[Envelope.Header.attempt]?.int ?? 1)
            failedAt = table[Envelope.Header.failedAt]?.string.flatMap(Self.parseTime) ?? now
        } else if let death {
            // The broker dead-lettered it: a delivery limit, a reject, a length limit.
            let queue = death["queue"]?.string ?? message.routingKey
            let cause = death["reason"]?.string ?? "unknown"
            failedQueue = queue
            failedAt = death["time"].flatMap(Self.time) ?? now
            let limit = deliveryLimit(queue)
            switch cause {
            case "delivery_limit":
                errorType = "delivery-limit"
                let delivered = limit.map { $0 + 1 }
                attempts = delivered ?? Int(table["x-delivery-count"]?.int ?? 1)
                reason = "the delivery limit of \(queue) was reached: delivered \(delivered.map(String.init) ?? "too many") times "
                    + "and never acknowledged (its worker kept dying or giving the message back)"
            case "rejected":
                errorType = "rejected"
                attempts = Int(table[Envelope.Header.attempt]?.int ?? 1)
                reason = "rejected by a consumer of \(queue) without requeueing"
            case "maxlen":
                errorType = "queue-full"
                attempts = 0
                reason = "\(queue) was full (its length limit) when the message arrived"
            case "expired":
                errorType = "expired"
                attempts = 0
                reason = "the message expired in \(queue) before anyone consumed it"
            default:
                errorType = cause
                attempts = Int(table[Envelope.Header.attempt]?.int ?? 1)
                reason = "dead-lettered by the broker from \(queue) (x-death reason '\(cause)')"
            }
        } else {
            failedQueue = message.routingKey.isEmpty ? "(unknown)" : message.routingKey
            errorType = "unknown"
            attempts = Int(table[Envelope.Header.attempt]?.int ?? 1)
            failedAt = now
            reason = "dead-lettered without x-error or x-death headers (published to the dead-letter exchange by hand?)"
        }

        if let exchange = table[Envelope.Header.originalExchange]?.string {
            self.exchange = exchange
            routingKey = table[Envelope.Header.originalRoutingKey]?.string ?? ""
        } else if let death, let exchange = death["exchange"]?.string {
            self.exchange = exchange
            if case .array(let keys)? = death["routing-keys"], let first = keys.first?.string {
                routingKey = first
            } else {
                routingKey = ""
            }
        } else {
            exchange = ""
            routingKey = failedQueue
        }

        messageID = p.messageID.flatMap { $0.isEmpty ? nil : $0 }

        // PostgreSQL text and jsonb cannot hold NUL: a letter that carries one is still stored.
        let clean = Self.storable
        (messageID, type, failedQueue, exchange, routingKey) = (messageID.map(clean), clean(type), clean(failedQueue), clean(exchange), clean(routingKey))
        (reason, errorType, sagaID) = (clean(reason), clean(errorType), sagaID.map(clean))
        headers = Dictionary(headers.map { (clean($0.key), $0.value.storable) }) { first, _ in first }
        properties = properties.mapValues(\.storable)
    }

    /// The text with every NUL replaced by U+FFFD.
    static func storable(_ text: String) -> String {
        text.utf8.contains(0) ? text.replacing("\u{0}", with: "\u{FFFD}") : text
    }

    /// The most recent `x-death` entry that is not a trip through a retry tier (those expire on purpose).
    static func lastDeath(_ headers: AMQPTable) -> AMQPTable? {
        guard case .array(let deaths)? = headers["x-death"] else { return nil }
        let tables = deaths.compactMap { value -> AMQPTable? in
            if case .table(let table) = value { return table }
            return nil
        }
        return tables.first { $0["reason"]?.string != "expired" } ?? tables.first
    }

    static func time(_ value: AMQPFieldValue) -> Date? {
        switch value {
        case .timestamp(let seconds): return Date(timeIntervalSince1970: Double(seconds))
        case .int(let seconds): return Date(timeIntervalSince1970: Double(seconds))
        case .string(let text): return parseTime(text)
        default: return nil
        }
    }

    static func parseTime(_ text: String) -> Date? {
        (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    static func properties(_ p: AMQPProperties) -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        if let v = p.contentType { out["content_type"] = .string(v) }
        if let v = p.contentEncoding { out["content_encoding"] = .string(v) }
        if let v = p.correlationID { out["correlation_id"] = .string(v) }
        if let v = p.replyTo { out["reply_to"] = .string(v) }
        if let v = p.messageID { out["message_id"] = .string(v) }
        if let v = p.timestamp { out["timestamp"] = .int(Int(v)) }
        if let v = p.type { out["type"] = .string(v) }
        if let v = p.appID { out["app_id"] = .string(v) }
        if let v = p.priority { out["priority"] = .int(Int(v)) }
        return out
    }

    /// The failure's fingerprint before hashing: what stays the same when the same fault hits
    /// another message (type, queue, kind of error, the message with ids and numbers taken out).
    public var fingerprintSource: String {
        [type, failedQueue, errorType, Self.normalised(reason)].joined(separator: "\u{1f}")
    }

    /// An error message with what varies between messages replaced: UUIDs and long hex runs by
    /// `<id>`, numbers by `<n>`; lower case, whitespace collapsed, at most 300 characters.
    public static func normalised(_ message: String) -> String {
        var out = ""
        var word = ""
        func flush() {
            guard !word.isEmpty else { return }
            out += classify(word)
            word = ""
        }
        var lastWasSpace = false
        for character in message.lowercased() {
            if character.isLetter || character.isNumber || character == "-" {
                word.append(character)
                lastWasSpace = false
                continue
            }
            flush()
            if character.isWhitespace {
                if !lastWasSpace && !out.isEmpty { out.append(" ") }
                lastWasSpace = true
            } else {
                out.append(character)
                lastWasSpace = false
            }
        }
        flush()
        while out.hasSuffix(" ") { out.removeLast() }
        return String(out.prefix(300))
    }

    /// One word of an error message: an id, a number, or a word with its digits replaced.
    private static func classify(_ word: String) -> String {
        let hex = word.filter { $0 != "-" }
        if hex.count >= 8, hex.allSatisfy(\.isHexDigit), hex.contains(where: \.isNumber) { return "<id>" }
        var out = ""
        var inNumber = false
        for character in word {
            if character.isNumber {
                if !inNumber { out += "<n>" }
                inNumber = true
            } else {
                out.append(character)
                inNumber = false
            }
        }
        return out
    }
}

extension JSONValue {
    /// An AMQP field value as JSON: tables become objects, timestamps seconds, bytes text.
    public init(_ value: AMQPFieldValue) {
        switch value {
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(Int(i))
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .bytes(let b): self = .string(String(decoding: b, as: UTF8.self))
        case .timestamp(let t): self = .int(Int(t))
        case .array(let a): self = .array(a.map(JSONValue.init))
        case .table(let t): self = .object(t.mapValues(JSONValue.init))
        case .void: self = .null
        }
    }

    /// Back to an AMQP field value, for a replay.
    public var fieldValue: AMQPFieldValue {
        switch self {
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(Int64(i))
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        case .array(let a): return .array(a.map(\.fieldValue))
        case .object(let o): return .table(o.mapValues(\.fieldValue))
        case .null: return .void
        }
    }

    /// The same value with no NUL in any string or key.
    var storable: JSONValue {
        switch self {
        case .string(let s): return .string(DeadLetterReceipt.storable(s))
        case .array(let a): return .array(a.map(\.storable))
        case .object(let o): return .object(Dictionary(o.map { (DeadLetterReceipt.storable($0.key), $0.value.storable) }) { first, _ in first })
        default: return self
        }
    }

    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var intValue: Int? {
        if case .int(let i) = self { return i }
        return nil
    }
}

/// What a replay publishes: the stored message, to its failed queue, with the same message id,
/// the failure headers removed, `attempt` back to 1 (it gets its retries again) and
/// `x-replayed-from` naming the letter.
public enum ReplayMessage {
    /// Headers the broker or the runtime set on the way to the dead-letter queue.
    static let failureHeaders: Set<String> = [
        Envelope.Header.error, Envelope.Header.errorType, Envelope.Header.failedQueue, Envelope.Header.failedAt,
        "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
        "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
    ]

    public static func properties(letterID: String, properties: [String: JSONValue], headers: [String: JSONValue]) -> AMQPProperties {
        var table: AMQPTable = [:]
        for (key, value) in headers where !failureHeaders.contains(key) { table[key] = value.fieldValue }
        table[Envelope.Header.attempt] = .int(1)
        table[Envelope.Header.replayedFrom] = .string(letterID)
        return AMQPProperties(
            contentType: properties["content_type"]?.stringValue, contentEncoding: properties["content_encoding"]?.stringValue,
            headers: table, persistent: true, priority: properties["priority"]?.intValue.map { UInt8(clamping: $0) },
            correlationID: properties["correlation_id"]?.stringValue, replyTo: properties["reply_to"]?.stringValue,
            messageID: properties["message_id"]?.stringValue, timestamp: properties["timestamp"]?.intValue.map { UInt64(max(0, $0)) },
            type: properties["type"]?.stringValue, appID: properties["app_id"]?.stringValue)
    }
}
