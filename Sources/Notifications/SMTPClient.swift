public import ClientRuntime
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Sends mail over SMTP (RFC 5321): EHLO, AUTH PLAIN when the URL has a user, MAIL, RCPT, DATA.
/// Each message is one short connection. The socket calls block, so they run on a thread of the
/// client's own, never on Swift's cooperative pool; every read and write has a timeout.
public final class SMTPClient: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// A 5xx reply: the server refuses this message for good.
        public var permanent: Bool
        public var description: String
    }

    public struct Mail: Sendable {
        public var from: String
        public var to: String
        public var subject: String
        public var body: String
        /// Extra headers, such as a `Message-ID` that lets a receiver drop a duplicate.
        public var headers: [(String, String)]
        public init(from: String, to: String, subject: String, body: String, headers: [(String, String)] = []) {
            self.from = from
            self.to = to
            self.subject = subject
            self.body = body
            self.headers = headers
        }
    }

    let url: ServerURL
    let timeoutSeconds: Int
    private let thread = ConnectionThread(name: "smtp", spin: .zero)

    /// - Parameter url: `smtp://[user:password@]host:port`.
    public init(url: String, timeout: Duration = .seconds(10)) throws {
        self.url = try ServerURL(url, schemes: ["smtp"])
        self.timeoutSeconds = Int(max(1, timeout.components.seconds))
    }

    deinit { thread.stop() }

    var address: String { "\(url.host):\(url.port ?? 25)" }

    public func send(_ mail: Mail) async throws {
        try await thread.submit { [self] in try sendBlocking(mail) }
    }

    private func sendBlocking(_ mail: Mail) throws {
        let fd = try connect()
        defer { close(fd) }
        var reader = LineReader(fd: fd)
        func expect(_ codes: Set<Int>, after command: String) throws {
            let (code, text) = try reader.reply(doing: command, at: address)
            guard codes.contains(code) else {
                throw Failure(permanent: code >= 500, description: "SMTP server \(address) answered \(code) to \(command): \(text)")
            }
        }
        func send(_ line: String, shown: String? = nil) throws {
            try write(fd, Array((line + "\r\n").utf8), doing: shown ?? line)
        }
        try expect([220], after: "the greeting")
        try send("EHLO shopfleet")
        try expect([250], after: "EHLO")
        if let user = url.user {
            let credentials = Array("\u{0}\(user)\u{0}\(url.password ?? "")".utf8)
            try send("AUTH PLAIN " + Data(credentials).base64EncodedString(), shown: "AUTH PLAIN")
            try expect([235], after: "AUTH PLAIN (check the user and password in SHOPFLEET_SMTP_URL)")
        }
        try send("MAIL FROM:<\(Self.address(in: mail.from))>")
        try expect([250], after: "MAIL FROM")
        try send("RCPT TO:<\(Self.address(in: mail.to))>")
        try expect([250, 251], after: "RCPT TO <\(mail.to)>")
        try send("DATA")
        try expect([354], after: "DATA")
        try write(fd, Array(Self.render(mail).utf8), doing: "the message")
        try expect([250], after: "the message")
        try? send("QUIT")
    }

    /// Headers and body, with lines starting with a dot doubled and CRLF line ends, then the end mark.
    static func render(_ mail: Mail) -> String {
        var head = [("From", mail.from), ("To", mail.to), ("Subject", mail.subject),
                    ("Date", rfc5322Date(Date())), ("MIME-Version", "1.0"),
                    ("Content-Type", "text/plain; charset=utf-8"), ("Content-Transfer-Encoding", "8bit")]
        head += mail.headers
        let headers = head.map { "\($0.0): \($0.1.filter { !$0.isNewline })" }
        let body = mail.body.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map { line in
            line.hasPrefix(".") ? "." + line : String(line)
        }
        return (headers + [""] + body).joined(separator: "\r\n") + "\r\n.\r\n"
    }

    static func address(in text: String) -> String {
        guard let open = text.lastIndex(of: "<"), let close = text.lastIndex(of: ">"), open < close else { return text }
        return String(text[text.index(after: open)..<close])
    }

    private func connect() throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(url.host, String(url.port ?? 25), &hints, &result)
        guard status == 0, let first = result else {
            throw Failure(permanent: false, description: "cannot resolve SMTP server \(address): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(result) }
        var lastError: Int32 = 0
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            if fd >= 0 {
                var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
                lastError = errno
                close(fd)
            }
            entry = info.pointee.ai_next
        }
        throw Failure(permanent: false, description: "cannot connect to SMTP server \(address): \(String(cString: strerror(lastError)))")
    }

    private func write(_ fd: Int32, _ bytes: [UInt8], doing: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                throw Failure(permanent: false, description: "SMTP server \(address): sending \(doing) failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// Reads CRLF-terminated reply lines; a reply is the lines up to one with a space after its code.
    struct LineReader {
        let fd: Int32
        var buffer: [UInt8] = []

        mutating func line(doing: String, at address: String) throws -> String {
            while true {
                if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[..<end], as: UTF8.self).trimmingSuffix("\r")
                    buffer.removeSubrange(...end)
                    return line
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0, errno == EINTR { continue }
                if count < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                    throw Failure(permanent: false, description: "SMTP server \(address) did not answer \(doing) in time")
                }
                guard count > 0 else {
                    throw Failure(permanent: false, description: "SMTP server \(address) closed the connection after \(doing)")
                }
                buffer += chunk[..<count]
            }
        }

        mutating func reply(doing: String, at address: String) throws -> (Int, String) {
            var text: [String] = []
            while true {
                let line = try line(doing: doing, at: address)
                guard line.count >= 3, let code = Int(line.prefix(3)) else {
                    throw Failure(permanent: false, description: "SMTP server \(address) sent '\(line.prefix(80))' after \(doing), not a reply")
                }
                text.append(String(line.dropFirst(4)))
                if line.count == 3 || line[line.index(line.startIndex, offsetBy: 3)] == " " { return (code, text.joined(separator: " ")) }
            }
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

/// `Tue, 24 Nov 2026 12:00:00 +0000`, the date format mail headers use.
func rfc5322Date(_ date: Date) -> String {
    let seconds = Int(date.timeIntervalSince1970)
    let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
    let time = seconds - days * 86_400
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    let weekdays = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    let weekday = weekdays[((days % 7) + 7) % 7]
    return "\(weekday), \(day) \(months[month - 1]) \(year) \(two(time / 3600)):\(two(time % 3600 / 60)):\(two(time % 60)) +0000"
}
