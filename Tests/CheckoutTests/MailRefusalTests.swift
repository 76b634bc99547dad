import ClientRuntime
import Contracts
import Fleet
import FoundationEssentials
import PostgresClient
import ShopfleetTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The notifications worker against an SMTP server that refuses a recipient for good (550): the
/// notification is marked failed with the server's answer and not tried again; the next order's
/// mail, to a recipient the server takes, goes. And against one that is down when the order is
/// confirmed: the mail goes once it is back, through the delivery's own retries.
@Suite("Mail a server refuses, or cannot take yet", .serialized)
struct MailRefusalTests {
    @Test func aRecipientRefusedWith5xxMarksTheNotificationFailedOnce() async throws {
        // scripts/smtp_test_server.py refuses every recipient starting with "refuse" (550).
        let port = LocalPort.free()
        let folder = "/tmp/" + TestServers.uniqueName("smtp-refusing")
        let server = try await Self.startMailServer(port: port, folder: folder)
        defer { server.signal(SIGKILL) }
        func mails() -> Int { Self.mails(in: folder) }

        try await CheckoutFleet.with(environment: ["SHOPFLEET_SMTP_URL": "smtp://127.0.0.1:\(port)"], mail: FleetPlan.Mail.none) { fleet in
            let mug = CheckoutFleet.product("MUG-REFUSED", price: 900)
            try await fleet.seed([.init(product: mug, stock: 2)])
            let refused = try await fleet.placeOrder([(mug, 1)], email: "refuse-me@example.com")
            #expect(try await fleet.waitForSaga(refused, in: ["completed"]).status == "completed")
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'email' AND status = 'failed' AND error LIKE '%550%'", [refused])) == 1
            }
            // A mail the server takes, after the refusal: the worker goes on.
            let taken = try await fleet.placeOrder([(mug, 1)], email: "ada@example.com")
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'email' AND status = 'sent'", [taken])) == 1
            }
            #expect(mails() == 1)
            // Tried once, with its event: refused for good, so no delivery of its own followed.
            #expect(try await fleet.count("SELECT attempts FROM notifications.notifications WHERE order_id = $1", [refused]) == 1)
            #expect(try await fleet.metric("notifications", "shopfleet_messages_consumed_total", containing: DeliverNotification.type) == 0)
            #expect(try await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND status = 'failed'", [refused]) == 1)
        }
    }

    @Test func aMailServerDownWhenTheOrderIsConfirmedGetsTheMailOnceItIsBack() async throws {
        // Held, not listening, until the server starts: connections are refused, and the fleet
        // cannot draw it for one of its own processes meanwhile.
        let held = LocalPort.hold()
        defer { held.release() }
        let folder = "/tmp/" + TestServers.uniqueName("smtp-late")
        func mails() -> Int { Self.mails(in: folder) }

        try await CheckoutFleet.with(environment: ["SHOPFLEET_SMTP_URL": "smtp://127.0.0.1:\(held.port)"], mail: FleetPlan.Mail.none) { fleet in
            let mug = CheckoutFleet.product("MUG-LATE-MAIL", price: 900)
            try await fleet.seed([.init(product: mug, stock: 2)])
            let id = try await fleet.placeOrder([(mug, 1)], email: "ada@example.com")
            #expect(try await fleet.waitForSaga(id, in: ["completed"]).status == "completed")
            // The row commits with what the confirmation's handler decided: still pending after
            // the attempt made with the event (attempts 1), handed to a DeliverNotification.
            try await waitUntil(deadline: .seconds(30)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'email' AND status = 'pending' AND attempts = 1", [id])) == 1
            }

            held.release()
            let server = try await Self.startMailServer(port: held.port, folder: folder)
            defer { server.signal(SIGKILL) }
            // The command's retry tiers (waits of 1 s, 5 s, 30 s: tries about 1, 6 and 36 s after
            // its first) bring it back to a server that takes it, ready a second or two from now.
            try await waitUntil(deadline: .seconds(60)) {
                (try? await fleet.count("SELECT count(*) FROM notifications.notifications WHERE order_id = $1 AND channel = 'email' AND status = 'sent'", [id])) == 1
            }
            #expect(mails() == 1)
            // The attempt with the event, then each of the command's deliveries (the last one sent it).
            let commands = try await fleet.metric("notifications", "shopfleet_messages_consumed_total", containing: DeliverNotification.type)
            #expect(commands >= 1)
            #expect(try await fleet.count("SELECT attempts FROM notifications.notifications WHERE order_id = $1", [id]) == 1 + Int(commands))
            #expect(try await fleet.metric("notifications", "shopfleet_messages_dead_lettered_total") == 0)
        }
    }

    /// scripts/smtp_test_server.py on `port`, keeping each mail in `folder`; ready when it returns.
    static func startMailServer(port: Int, folder: String) async throws -> RunningProcess {
        let python = try TestServers.environment("SHOPFLEET_PYTHON")
        let server = try ChildProcess.spawn([python, TestServers.repositoryRoot + "/scripts/smtp_test_server.py", String(port), folder],
                                            logFile: folder + ".log")
        do {
            try await waitUntil(deadline: .seconds(20)) { FileManager.default.fileExists(atPath: folder + "/ready") }
        } catch {
            server.signal(SIGKILL)
            throw error
        }
        return server
    }

    /// The mails the server in `folder` kept.
    static func mails(in folder: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasPrefix("mail-") }.count
    }
}
