import FoundationEssentials
@testable import Notifications
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
