public import ClientRuntime
import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Sends mail over SMTP (RFC 5321): EHLO, STARTTLS (RFC 3207) with the server's certificate
/// verified, AUTH PLAIN when the URL has a user — never in clear — then MAIL, RCPT, DATA, on
/// SwiftNIO's event loops, never blocking Swift's cooperative pool, with a deadline for each mail.
///
/// A connection is kept for the next mail (up to `keptConnections` idle ones, each for at most
/// `idleTime`): the greeting, EHLO, the TLS handshake and AUTH happen once per connection, not
/// once per mail. A kept connection the server has closed meanwhile fails before the server
/// accepted anything, and the mail goes again on a new connection.
///
/// `smtp://[user:password@]host:port[?starttls=required|opportunistic|off][&ca=/path/ca.pem]`:
/// `required` (the default when the URL has a user) refuses a server that does not offer STARTTLS;
/// `opportunistic` (the default otherwise, as for a local sink) upgrades when offered; `off` never
/// does, and is refused with a user. The certificate is checked against the system's roots, or the
/// PEM bundle `ca`, and the host name (or IP address).
public final class SMTPClient: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        /// A 5xx reply: the server refuses this message for good.
        public var permanent: Bool
        public var description: String
        /// The server answered with a reply code (it refused this mail); the connection is fine.
        var refused = false
        /// A kept connection failed before the server accepted anything of the mail: send it again
        /// on a new connection.
        var stale = false
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

    public enum StartTLS: String, Sendable { case required, opportunistic, off }

    let url: ServerURL
    let timeout: Duration
    public let startTLS: StartTLS
    let tls: TLSConfiguration
    /// Idle connections kept for the next mail, and how long each may wait for one.
    let keptConnections: Int
    let idleTime: Duration
    /// Connections waiting for their next mail, the most recently used last.
    private let idle = Mutex<[Kept]>([])
    /// Connections opened, for tests and metrics.
    let opened = Atomic<Int>(0)

    /// - Parameters:
    ///   - url: `smtp://[user:password@]host:port[?starttls=…&ca=…]`.
    ///   - timeout: the longest one mail may take, connecting included.
    ///   - keptConnections: idle connections kept for the next mails (0: a connection per mail).
    ///   - idleTime: how long an idle connection is kept (shorter than servers' idle limits, 5 min for most).
    public init(url: String, timeout: Duration = .seconds(10), keptConnections: Int = 8, idleTime: Duration = .seconds(30)) throws {
        self.url = try ServerURL(url, schemes: ["smtp"])
        self.timeout = timeout
        self.keptConnections = keptConnections
        self.idleTime = idleTime
        let mode = self.url.queryValue("starttls").map { StartTLS(rawValue: $0) } ?? (self.url.user == nil ? .opportunistic : .required)
        guard let mode else {
            throw Failure(permanent: true, description: "starttls must be required, opportunistic or off, not '\(self.url.queryValue("starttls") ?? "")'")
        }
        if mode != .required, self.url.user != nil {
            throw Failure(permanent: true, description: "the SMTP URL has a user, so STARTTLS must be required: its password is never sent in clear")
        }
        startTLS = mode
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let ca = self.url.queryValue("ca") {
            guard FileManager.default.fileExists(atPath: ca) else {
                throw Failure(permanent: true, description: "the SMTP URL's ca file \(ca) does not exist")
            }
            configuration.trustRoots = .file(ca)
        }
        tls = configuration
    }

    var address: String { "\(url.host):\(url.port ?? 25)" }

    /// One mail, and who waits for its outcome.
    struct Job: Sendable {
        let mail: Mail
        let done: CheckedContinuation<Void, any Error>
    }

    /// An idle connection: its task waits for the next job on `jobs`.
    struct Kept: Sendable {
        let jobs: AsyncStream<Job>.Continuation
        let since: ContinuousClock.Instant
    }

    public func send(_ mail: Mail) async throws {
        // A kept connection first; if the server closed it meanwhile, the next, then a new one.
        while let kept = takeIdle() {
            do {
                return try await hand(mail, to: kept.jobs)
            } catch let failure as Failure where failure.stale {
                continue
            }
        }
        let (jobs, handle) = AsyncStream<Job>.makeStream()
        opened.add(1, ordering: .relaxed)
        Task { await self.serve(jobs, handle) }
        try await hand(mail, to: handle)
    }

    private func hand(_ mail: Mail, to jobs: AsyncStream<Job>.Continuation) async throws {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            if case .terminated = jobs.yield(Job(mail: mail, done: done)) {
                done.resume(throwing: Failure(permanent: false, description: "the kept connection to \(address) was closed", stale: true))
            }
        }
    }

    /// The most recently used idle connection still within its idle time; older ones are closed.
    private func takeIdle() -> Kept? {
        let now = ContinuousClock.now
        let (taken, expired) = idle.withLock { idle -> (Kept?, [Kept]) in
            let expired = idle.filter { now - $0.since > idleTime }
            idle.removeAll { now - $0.since > idleTime }
            return (idle.popLast(), expired)
        }
        for kept in expired { kept.jobs.finish() }
        return taken
    }

    /// Back to the idle connections, unless enough are kept already.
    private func keep(_ jobs: AsyncStream<Job>.Continuation) -> Bool {
        idle.withLock { idle in
            guard idle.count < keptConnections else { return false }
            idle.append(Kept(jobs: jobs, since: .now))
            return true
        }
    }

    /// One connection's life: connect and greet for its first job, then a mail per job until it is
    /// not kept (or closed by `takeIdle`), then QUIT. A job that fails with the connection fails
    /// (as stale if the connection was a kept one and nothing was accepted); any job handed to it
    /// after that fails as stale, so its sender opens a new connection.
    private func serve(_ jobs: AsyncStream<Job>, _ handle: AsyncStream<Job>.Continuation) async {
        var pending = jobs.makeAsyncIterator()
        guard var job = await pending.next() else { return }
        // The job whose sender still waits: the one a failure of the connection answers.
        var unanswered: Job? = job
        var reused = false, accepted = false
        let deadline = MailDeadline()
        do {
            deadline.arm(timeout, channel: nil)
            let channel = try await connect()
            deadline.arm(timeout, channel: channel.channel)
            try await channel.executeThenClose { inbound, outbound in
                var session = Session(lines: inbound.makeAsyncIterator(), outbound: outbound, address: address)
                try await greet(&session, channel: channel.channel)
                while true {
                    accepted = false
                    var refusal: Failure?
                    do {
                        try await transfer(&session, job.mail, accepted: &accepted)
                    } catch let failure as Failure where failure.refused {
                        // This mail was refused; the connection is fine once the transaction is reset.
                        try await session.send("RSET")
                        try await session.expect([250], after: "RSET")
                        refusal = failure
                    }
                    deadline.disarm()
                    // Kept before its sender hears back, so that its next mail finds it.
                    let kept = keep(handle)
                    unanswered = nil
                    if let refusal { job.done.resume(throwing: refusal) } else { job.done.resume() }
                    guard kept, let next = await pending.next() else { break }
                    job = next
                    unanswered = next
                    reused = true
                    deadline.arm(timeout, channel: channel.channel)
                }
                try? await session.send("QUIT")
            }
        } catch {
            var failure: Failure
            if deadline.timedOut {
                failure = Failure(permanent: false, description: "SMTP server \(address) did not finish within \(timeout)")
            } else if let known = error as? Failure {
                failure = known
            } else {
                failure = Failure(permanent: false, description: "SMTP server \(address): \(Self.explain(error))")
            }
            failure.stale = reused && !accepted
            unanswered?.done.resume(throwing: failure)
        }
        deadline.disarm()
        handle.finish()
        // Handed over while this connection was closing: their senders open a new one.
        while let late = await pending.next() {
            late.done.resume(throwing: Failure(permanent: false, description: "the kept connection to \(address) was closed", stale: true))
        }
    }

    private func connect() async throws -> NIOAsyncChannel<ByteBuffer, ByteBuffer> {
        do {
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(timeout.milliseconds)))
                .connect(host: url.host, port: url.port ?? 25) { channel in
                    channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                }
        } catch {
            throw Failure(permanent: false, description: "cannot connect to SMTP server \(address): \(error)")
        }
    }

    /// The greeting, EHLO, STARTTLS and AUTH: once per connection.
    private func greet(_ session: inout Session, channel: any Channel) async throws {
        try await session.expect([220], after: "the greeting")
        try await session.send("EHLO shopfleet")
        let extensions = try await session.expect([250], after: "EHLO")
        var secure = false
        let offered = extensions.contains { $0.uppercased().hasPrefix("STARTTLS") }
        if startTLS != .off, offered {
            try await session.send("STARTTLS")
            try await session.expect([220], after: "STARTTLS")
            let context = try NIOSSLContext(configuration: tls)
            // A host name is checked against the certificate's names; an IP address against its IP entries.
            let isAddress = url.host.contains(":") || url.host.split(separator: ".").count == 4 && url.host.allSatisfy { $0.isNumber || $0 == "." }
            let handler = try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : url.host)
            try await channel.pipeline.addHandler(handler, position: .first)
            try await session.send("EHLO shopfleet")
            _ = try await session.expect([250], after: "EHLO after STARTTLS")
            secure = true
        } else if startTLS == .required {
            throw Failure(permanent: false, description: "SMTP server \(address) does not offer STARTTLS, which this URL requires; nothing was sent"
                          + (url.user == nil ? "" : " (its password is never sent in clear)"))
        }
        if let user = url.user {
            precondition(secure, "AUTH only ever goes over TLS")
            let credentials = Array("\u{0}\(user)\u{0}\(url.password ?? "")".utf8)
            try await session.send("AUTH PLAIN " + Data(credentials).base64EncodedString(), shown: "AUTH PLAIN")
            try await session.expect([235], after: "AUTH PLAIN (check the user and password in SHOPFLEET_SMTP_URL)")
        }
    }

    /// One mail: MAIL, RCPT, DATA, the message. `accepted` turns true once the server took MAIL
    /// (from then on a failure may have delivered it).
    private func transfer(_ session: inout Session, _ mail: Mail, accepted: inout Bool) async throws {
        try await session.send("MAIL FROM:<\(Self.address(in: mail.from))>")
        try await session.expect([250], after: "MAIL FROM")
        accepted = true
        try await session.send("RCPT TO:<\(Self.address(in: mail.to))>")
        try await session.expect([250, 251], after: "RCPT TO <\(mail.to)>")
        try await session.send("DATA")
        try await session.expect([354], after: "DATA")
        try await session.write(Self.render(mail), doing: "the message")
        try await session.expect([250], after: "the message")
    }

    /// What a TLS failure means, in words.
    static func explain(_ error: any Error) -> String {
        if let ssl = error as? NIOSSLError {
            switch ssl {
            case .handshakeFailed(let reason): return "the TLS handshake failed (\(reason)): is the certificate valid for this host and signed by a trusted CA (?ca=)?"
            default: return "TLS failed: \(ssl)"
            }
        }
        return "\(error)"
    }

    /// Reply lines in, commands out.
    struct Session {
        var lines: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        let address: String
        var buffer: [UInt8] = []

        mutating func send(_ line: String, shown: String? = nil) async throws {
            try await write(line + "\r\n", doing: shown ?? line)
        }

        mutating func write(_ text: String, doing: String) async throws {
            do {
                try await outbound.write(ByteBuffer(string: text))
            } catch {
                throw Failure(permanent: false, description: "SMTP server \(address): sending \(doing) failed: \(SMTPClient.explain(error))")
            }
        }

        mutating func line(doing: String) async throws -> String {
            while true {
                if let end = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[..<end], as: UTF8.self).trimmingSuffix("\r")
                    buffer.removeSubrange(...end)
                    return line
                }
                let chunk: ByteBuffer?
                do { chunk = try await lines.next() } catch {
                    throw Failure(permanent: false, description: "SMTP server \(address) after \(doing): \(SMTPClient.explain(error))")
                }
                guard let chunk else { throw Failure(permanent: false, description: "SMTP server \(address) closed the connection after \(doing)") }
                buffer += chunk.readableBytesView
            }
        }

        /// The reply's lines (without codes); a code not in `codes` is a ``Failure`` (permanent for 5xx).
        @discardableResult
        mutating func expect(_ codes: Set<Int>, after doing: String) async throws -> [String] {
            var text: [String] = []
            while true {
                let line = try await line(doing: doing)
                guard line.count >= 3, let code = Int(line.prefix(3)) else {
                    throw Failure(permanent: false, description: "SMTP server \(address) sent '\(line.prefix(80))' after \(doing), not a reply")
                }
                text.append(String(line.dropFirst(4)))
                if line.count == 3 || line[line.index(line.startIndex, offsetBy: 3)] == " " {
                    guard codes.contains(code) else {
                        throw Failure(permanent: code >= 500, description: "SMTP server \(address) answered \(code) to \(doing): \(text.joined(separator: " "))",
                                      refused: true)
                    }
                    return text
                }
            }
        }
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

/// One mail's deadline: past it the connection is closed under the conversation, which then fails.
final class MailDeadline: Sendable {
    private let timer = Mutex<Task<Void, Never>?>(nil)
    private let expired = Atomic(false)

    var timedOut: Bool { expired.load(ordering: .relaxed) }

    /// Starts the clock again (a nil channel: connecting, which has its own timeout).
    func arm(_ timeout: Duration, channel: (any Channel)?) {
        let task = Task { [self] in
            do { try await Task.sleep(for: timeout) } catch { return }
            guard let channel else { return }
            expired.store(true, ordering: .relaxed)
            channel.close(promise: nil)
        }
        timer.withLock { timer in
            timer?.cancel()
            timer = task
        }
    }

    func disarm() {
        timer.withLock { timer in
            timer?.cancel()
            timer = nil
        }
    }
}
