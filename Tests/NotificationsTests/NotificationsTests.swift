import ClientRuntime
#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
@testable import Notifications
import Synchronization
import Testing

@Suite("Notifications: signatures and mail format")
struct NotificationsUnitTests {
    func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    @Test func sha256MatchesTheStandardVectors() {
        #expect(hex(SHA256Digest.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex(SHA256Digest.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(hex(SHA256Digest.hash(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func hmacMatchesRFC4231() {
        // Test case 2 (a short key) and test case 6 (a key longer than the block).
        #expect(HMACSHA256.hex(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(HMACSHA256.hex(key: [UInt8](repeating: 0xaa, count: 131),
                               message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test func mailIsDotStuffedWithCRLFAndEndsWithTheEndMark() {
        let text = SMTPClient.render(.init(from: "Shop <a@b.c>", to: "x@y.z", subject: "Hi\r\nBcc: evil@x", body: "line\n.dot\nend",
                                           headers: [("Message-ID", "<1@shop>")]))
        #expect(text.contains("Subject: HiBcc: evil@x\r\n"))  // a header cannot be split into two
        #expect(text.contains("\r\n\r\nline\r\n..dot\r\nend\r\n.\r\n"))
        #expect(text.hasSuffix("\r\n.\r\n"))
        #expect(SMTPClient.address(in: "Shop <a@b.c>") == "a@b.c")
        #expect(SMTPClient.address(in: "a@b.c") == "a@b.c")
    }

    @Test func datesAreInTheMailFormat() {
        #expect(rfc5322Date(Date(timeIntervalSince1970: 0)) == "Thu, 1 Jan 1970 00:00:00 +0000")
        #expect(rfc5322Date(Date(timeIntervalSince1970: 1_800_000_000)) == "Fri, 15 Jan 2027 08:00:00 +0000")
        #expect(rfc5322Date(Date(timeIntervalSince1970: 951_782_400)) == "Tue, 29 Feb 2000 00:00:00 +0000")
    }

    @Test func anUnreachableMailServerIsAClearTransientError() async throws {
        let client = try SMTPClient(url: "smtp://127.0.0.1:1", timeout: .seconds(2))
        do {
            try await client.send(.init(from: "a@b.c", to: "x@y.z", subject: "s", body: "b"))
            Issue.record("sent to a closed port")
        } catch let failure as SMTPClient.Failure {
            #expect(!failure.permanent)
            #expect(failure.description.contains("127.0.0.1:1"))
        }
    }
}

/// The SMTP client against a real SMTP server (aiosmtpd) offering STARTTLS with a certificate of a
/// CA made for the test: the upgrade, certificate checks, and a password never sent in clear.
@Suite("SMTP over STARTTLS", .serialized)
struct SMTPTLSTests {
    /// A CA and a certificate for 127.0.0.1 signed by it, made with openssl in a folder of its own.
    struct Certificates {
        let folder: String
        var ca: String { folder + "/ca.pem" }
        var cert: String { folder + "/cert.pem" }
        var key: String { folder + "/key.pem" }

        init() async throws {
            folder = "/tmp/smtp-tls-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let script = """
                set -e; cd '\(folder)'
                openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=Shopfleet test CA' 2>/dev/null
                openssl req -newkey rsa:2048 -nodes -keyout key.pem -out cert.csr -subj '/CN=127.0.0.1' 2>/dev/null
                printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf
                openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null
                """
            _ = try await ChildProcess.check(["/bin/sh", "-c", script])
        }
    }

    /// Starts the test server; returns its port, folder and process.
    func server(tls: Certificates?, user: String?, password: String?, port: Int? = nil) async throws -> (port: Int, folder: String, process: RunningProcess) {
        let python = ProcessInfo.processInfo.environment["SHOPFLEET_PYTHON"] ?? "python3"
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let port = port ?? LocalPort.free()
        let folder = "/tmp/smtp-server-\(UInt32.random(in: 0...UInt32.max))"
        var argv = [python, root + "/scripts/smtp_test_server.py", String(port), folder]
        if let tls { argv += ["--tls", tls.cert, tls.key] }
        if let user, let password { argv += ["--user", user, "--password", password] }
        let process = try ChildProcess.spawn(argv, logFile: folder + ".log")
        try await waitUntil(deadline: .seconds(20)) { FileManager.default.fileExists(atPath: folder + "/ready") }
        return (port, folder, process)
    }

    func auths(_ folder: String) -> [String] {
        ((try? String(contentsOfFile: folder + "/auth.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func mails(_ folder: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasPrefix("mail-") }.count
    }

    let mail = SMTPClient.Mail(from: "Shop <shop@example.com>", to: "ada@example.com", subject: "Your order", body: "Thanks.")

    @Test func mailGoesOverTLSWithAVerifiedCertificateAndAuthOnlyThen() async throws {
        let certificates = try await Certificates()
        let (port, folder, process) = try await server(tls: certificates, user: "shop", password: "s3cret pass")
        defer { process.signal(SIGKILL) }
        // Trusting the test CA: the upgrade, then AUTH over TLS, then the message.
        let client = try SMTPClient(url: "smtp://shop:s3cret%20pass@127.0.0.1:\(port)?ca=\(certificates.ca)")
        #expect(client.startTLS == .required)
        try await client.send(mail)
        #expect(mails(folder) == 1)
        #expect(auths(folder).count == 1 && auths(folder)[0].contains(#""tls": true"#) && auths(folder)[0].contains(#""ok": true"#), "\(auths(folder))")

        // Without the CA the certificate is not trusted: nothing is sent, and it says why.
        let untrusting = try SMTPClient(url: "smtp://shop:s3cret%20pass@127.0.0.1:\(port)")
        do {
            try await untrusting.send(mail)
            Issue.record("sent to a server whose certificate nobody trusts")
        } catch let failure as SMTPClient.Failure {
            #expect(failure.description.contains("TLS") || failure.description.contains("certificate"), "\(failure)")
        }
        #expect(mails(folder) == 1 && auths(folder).count == 1)
    }

    func peers(_ folder: String) -> [String] {
        ((try? String(contentsOfFile: folder + "/peers.log", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Mails share a connection: the greeting, TLS and AUTH once, then a mail per MAIL … DATA. A
    /// refused recipient resets the transaction and the connection goes on; a kept connection the
    /// server closed meanwhile (here: the server restarted) is replaced, and the mail still goes.
    @Test func mailsShareAConnectionAndAClosedOneIsReplaced() async throws {
        let certificates = try await Certificates()
        var (port, folder, process) = try await server(tls: certificates, user: "shop", password: "pw")
        defer { process.signal(SIGKILL) }
        let client = try SMTPClient(url: "smtp://shop:pw@127.0.0.1:\(port)?ca=\(certificates.ca)")
        for _ in 0..<3 { try await client.send(mail) }
        #expect(mails(folder) == 3)
        #expect(Set(peers(folder)).count == 1, "\(peers(folder))")
        #expect(auths(folder).count == 1)
        #expect(client.opened.load(ordering: .relaxed) == 1)

        var refused = mail
        refused.to = "refuse@example.com"
        do {
            try await client.send(refused)
            Issue.record("a refused recipient was taken")
        } catch let failure as SMTPClient.Failure {
            #expect(failure.permanent && failure.description.contains("550"), "\(failure)")
        }
        try await client.send(mail)
        #expect(mails(folder) == 4 && Set(peers(folder)).count == 1 && client.opened.load(ordering: .relaxed) == 1)

        // The server goes away and comes back on the same port: the kept connection is dead.
        process.signal(SIGKILL)
        _ = await process.wait()
        let restarted = try await server(tls: certificates, user: "shop", password: "pw", port: port)
        (folder, process) = (restarted.folder, restarted.process)
        try await client.send(mail)
        #expect(mails(folder) == 1)
        #expect(client.opened.load(ordering: .relaxed) == 2)
    }

    @Test func aPasswordIsNeverSentInClear() async throws {
        // A server without STARTTLS that would take AUTH in clear.
        let (port, folder, process) = try await server(tls: nil, user: "shop", password: "pw")
        defer { process.signal(SIGKILL) }
        let client = try SMTPClient(url: "smtp://shop:pw@127.0.0.1:\(port)")
        do {
            try await client.send(mail)
            Issue.record("sent with a password to a server without TLS")
        } catch let failure as SMTPClient.Failure {
            #expect(failure.description.contains("STARTTLS") && !failure.permanent, "\(failure)")
        }
        #expect(auths(folder).isEmpty && mails(folder) == 0)
        // And it cannot be configured to.
        #expect(throws: SMTPClient.Failure.self) { _ = try SMTPClient(url: "smtp://shop:pw@127.0.0.1:\(port)?starttls=off") }
        #expect(throws: SMTPClient.Failure.self) { _ = try SMTPClient(url: "smtp://shop:pw@127.0.0.1:\(port)?starttls=opportunistic") }
        // Without a user, a server without STARTTLS (a local sink) still gets the mail.
        try await SMTPClient(url: "smtp://127.0.0.1:\(port)").send(mail)
        #expect(mails(folder) == 1)
    }
}
