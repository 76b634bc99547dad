import FoundationEssentials
import Messaging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How `shopfleet dev` shows its children's output: each line with the process's name in front,
/// JSON log lines made readable.
enum DevOutput {
    /// A JSON log line as `level message key=value …`; anything else as it is.
    static func readable(_ line: String) -> String {
        guard line.hasPrefix("{"), let fields = try? JSONDecoder().decode([String: JSONValue].self, from: Data(line.utf8)),
              case .string(let message)? = fields["message"] else { return line }
        var level = "info"
        if case .string(let text)? = fields["level"] { level = text }
        let skipped: Set<String> = ["message", "level", "time", "logger", "service"]
        let details = fields.filter { !skipped.contains($0.key) }.sorted { $0.key < $1.key }.map { key, value -> String in
            if case .string(let text) = value { return "\(key)=\(text)" }
            return "\(key)=\(value)"
        }
        return ([level.padding(7), message] + details).joined(separator: " ")
    }

    /// `[orders-2]           info    consuming …`
    static func line(_ process: String, _ text: String) {
        emit("[\(process)]" + String(repeating: " ", count: max(0, 19 - process.count)) + readable(text))
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

private let outputLock = Mutex<Void>(())

/// Writes a line to standard output at once (`print` buffers when the output is a pipe), one
/// line at a time whichever thread calls.
func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    outputLock.withLock { _ in
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
            if written <= 0 { if errno == EINTR { continue }; return }
            offset += written
        }
    }
}
