import FoundationEssentials
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One JSON object per line on standard error: `time`, `level`, `logger`, `message`, then the
/// metadata (message id, type, saga id, trace id, …) as fields. What log collectors ingest as is.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    private static let lock = Mutex(())

    public init(label: String, level: Logger.Level = .info, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.logLevel = level
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for (key, value) in merged { fields[key] = "\(value)" }
        var line = "{\"time\":\(Self.quote(Date().formatted(.iso8601)))"
        line += ",\"level\":\(Self.quote(event.level.rawValue)),\"logger\":\(Self.quote(label))"
        line += ",\"message\":\(Self.quote("\(event.message)"))"
        for key in fields.keys.sorted() { line += ",\(Self.quote(key)):\(Self.quote(fields[key]!))" }
        line += "}\n"
        Self.lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
                if n <= 0 { break }
                offset += n
            }
        }
    }

    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let s where s.value < 0x20: out += "\\u" + String(s.value, radix: 16).leftPadded(to: 4)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
