import ArgumentParser
import ClientRuntime
import Hummingbird
import Logging
import Messaging
import PaymentsSandbox
import WorkerHost

struct PaymentsSandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "payments-sandbox",
        abstract: "Run a local Stripe-compatible payment gateway with test cards and fault injection, until SIGTERM.",
        discussion: """
            Callers authenticate with SHOPFLEET_PAYMENTS_API_KEY as a bearer token; when it is not set, any
            key starting with sk_test_ is accepted. State is kept in memory.

            Test payment methods: pm_card_visa / pm_card_4242424242424242 succeed; pm_card_chargeDeclined /
            pm_card_4000000000000002 are declined; pm_card_chargeDeclinedInsufficientFunds /
            pm_card_4000000000009995 are declined for insufficient funds.

            Faults can also be changed while it runs: POST /_sandbox/faults with
            {"latencyMilliseconds": 0, "failureRate": 0, "dropRate": 0, "hold": false, "rateLimitNext": 0}
            (each optional; hold keeps every request waiting until faults are set without it; rateLimitNext
            answers that many next requests 429); GET /_sandbox/stats says what it did,
            GET /_sandbox/intents lists every PaymentIntent (the gateway's ledger).
            """)

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"
    @Option(help: "Port to listen on (default: the port of SHOPFLEET_PAYMENTS_URL, 12111).")
    var port: Int?
    @Option(help: "Added to every API request, e.g. 200ms or 1m (a gateway that hangs).")
    var latency: String?
    @Option(help: "Share of API requests answered 500 without being handled, 0 to 1.")
    var failureRate = 0.0
    @Option(help: "Share of API requests handled whose answer is lost (the connection dropped), 0 to 1.")
    var dropRate = 0.0

    func validate() throws {
        guard (0...1).contains(failureRate), (0...1).contains(dropRate) else {
            throw ValidationError("--failure-rate and --drop-rate must be between 0 and 1")
        }
        if let latency, Topology.milliseconds(latency) == nil {
            throw ValidationError("--latency must be a duration such as 200ms or 30s, not '\(latency)'")
        }
    }

    func run() async throws {
        let config = try ShopfleetConfiguration.current()
        let level = Logger.Level(rawValue: config.value(ShopfleetConfiguration.logLevel)) ?? .info
        _ = WorkerProcess.bootstrap(level: level)
        var logger = Logger(label: "shopfleet.payments-sandbox")
        logger.logLevel = level
        var faults = PaymentsSandbox.Faults()
        faults.latencyMilliseconds = latency.flatMap(Topology.milliseconds) ?? 0
        faults.failureRate = failureRate
        faults.dropRate = dropRate
        let key = config.value(ShopfleetConfiguration.paymentsAPIKey)
        let listenPort = port ?? (try? ServerURL(config.value(ShopfleetConfiguration.paymentsURL), schemes: ["http", "https"]))?.port ?? 12111
        if key.isEmpty { logger.notice("SHOPFLEET_PAYMENTS_API_KEY is not set: accepting any sk_test_ key") }
        let sandbox = PaymentsSandbox(apiKey: key.isEmpty ? nil : key, faults: faults, logger: logger)
        try await sandbox.application(host: host, port: listenPort).runService()
    }
}
