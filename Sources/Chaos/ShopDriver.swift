import AsyncHTTPClient
import ClientRuntime
import FoundationEssentials
import NIOCore
import NIOHTTP1
import Synchronization

/// Customers shopping through the edge over HTTP, the way clients do: each registers, logs in,
/// fills a cart and places one order at a time with an `Idempotency-Key`, asks to cancel some,
/// and follows each order until it ends. A request that meets a fault of the fleet (a 5xx, a 429,
/// a timeout, a refused connection) is sent again, the same, after a pause; a refused connection
/// sends the next try to the next edge, as a load balancer would take a dead one out.
final class ShopDriver: Sendable {
    struct Answer: Sendable {
        var status: Int
        var text: String
        var json: [String: AnswerValue]
        var summary: String { "\(status) \(text.prefix(200))" }
    }

    /// What happened to one order, for the report and the ledger.
    struct Outcome: Sendable {
        var order: ShopperMix.Order
        var orderID: String?
        /// Seconds from the start of shopping.
        var acceptedAt: Double?
        var lastAnswer: String
    }

    /// Counts of what the customers met.
    struct Counters: Sendable, Codable {
        var requests = 0
        var retries = 0
        var serverErrors = 0
        var tooManyRequests = 0
        var timeouts = 0
        var connectionFailures = 0
        var cartsRefilled = 0
    }

    let edges: [Int]
    let mix: ShopperMix
    let seed: UInt64
    let runID: String
    /// Give up on one request after this long of faults.
    let patience: Duration
    /// Follow an order at most this long before moving on (the ledger checks it later anyway).
    let followFor: Duration
    let started: ContinuousClock.Instant
    let startedAt: Date
    private let next = Mutex<Int>(0)
    private let orders: Int
    private let interval: Duration
    private let outcomes = Mutex<[Outcome]>([])
    private let counters = Mutex(Counters())
    private let say: @Sendable (String) -> Void

    init(edges: [Int], mix: ShopperMix, seed: UInt64, runID: String, orders: Int, spreadOver: Duration,
         patience: Duration = .seconds(240), followFor: Duration = .seconds(240), say: @escaping @Sendable (String) -> Void) {
        self.edges = edges
        self.mix = mix
        self.seed = seed
        self.runID = runID
        self.orders = orders
        self.interval = spreadOver / max(1, orders)
        self.patience = patience
        self.followFor = followFor
        self.started = .now
        self.startedAt = Date()
        self.say = say
    }

    var results: [Outcome] { outcomes.withLock { $0 } }
    var counts: Counters { counters.withLock { $0 } }
    var accepted: Int { outcomes.withLock { $0.filter { $0.orderID != nil }.count } }

    /// Runs `customers` customers until every order was tried.
    func shop(customers: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<customers {
                group.addTask { await self.customer(index) }
            }
        }
    }

    /// The next order number to place, when its time has come (orders are spread evenly over the
    /// fault window); nil when all are taken.
    private func nextOrder() async -> Int? {
        guard let number = next.withLock({ value -> Int? in
            guard value < orders else { return nil }
            defer { value += 1 }
            return value
        }) else { return nil }
        do { try await Task.sleep(until: started + interval * number) } catch { return nil }
        return number
    }

    // MARK: - One customer

    private struct Session {
        var token: String
        var customerID: String
    }

    private func customer(_ index: Int) async {
        let email = "chaos-\(runID)-\(index)@example.com"
        let password = "chaos password \(index)"
        var edge = index % edges.count
        guard var session = await signIn(email: email, password: password, edge: &edge) else {
            say("customer \(index) could not sign in; its orders go to the others")
            return
        }
        while let number = await nextOrder() {
            let order = mix.order(number)
            var outcome = Outcome(order: order, lastAnswer: "")
            await place(order, into: &outcome, session: &session, email: email, password: password, edge: &edge)
            outcomes.withLock { $0.append(outcome) }
        }
    }

    private func signIn(email: String, password: String, edge: inout Int) async -> Session? {
        let register = await reliably(.POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "\#(password)", "name": "Chaos"}"#,
                                      edge: &edge)
        guard let register, register.status == 201 || register.status == 409 else { return nil }
        guard let login = await reliably(.POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "\#(password)"}"#, edge: &edge),
              login.status == 200, case .string(let token)? = login.json["accessToken"], case .string(let customer)? = login.json["customerId"] else {
            return nil
        }
        return Session(token: token, customerID: customer)
    }

    private func place(_ order: ShopperMix.Order, into outcome: inout Outcome, session: inout Session, email: String, password: String,
                       edge: inout Int) async {
        let body = #"{"paymentMethod": "\#(order.card.rawValue)", "shippingAddress": {"name": "Chaos Customer", "line1": "1 Fault Street", "postalCode": "1000", "city": "Brussels", "country": "BE"}}"#
        let key = order.idempotencyKey(seed: seed)
        var refills = 0
        var fill = true
        while true {
            if fill {
                // A fresh cart of what this order asks for.
                guard await cartReady(order, session: &session, email: email, password: password, edge: &edge, outcome: &outcome) else { return }
                fill = false
            }
            guard let answer = await reliably(.POST, "/v1/orders", json: body, token: session.token, headers: [("Idempotency-Key", key)], edge: &edge) else {
                outcome.lastAnswer = "no answer for \(patience) (faults only)"
                return
            }
            outcome.lastAnswer = answer.summary
            switch answer.status {
            case 202:
                guard case .string(let id)? = answer.json["orderId"] else { return }
                outcome.orderID = id
                outcome.acceptedAt = seconds(since: started)
            case 401:
                guard let renewed = await signIn(email: email, password: password, edge: &edge) else { return }
                session = renewed
                continue
            case 409 where answer.text.contains("empty") && refills < 5:
                // The cart was lost (Redis restarted before it had written it): fill it again.
                refills += 1
                counters.withLock { $0.cartsRefilled += 1 }
                fill = true
                continue
            default:
                return
            }
            break
        }
        guard let id = outcome.orderID else { return }
        if order.cancels {
            _ = await reliably(.POST, "/v1/orders/\(id)/cancel", json: #"{"reason": "changed my mind"}"#, token: session.token, edge: &edge,
                               retryNotFound: true)
        }
        // Follow it until it ends, as a customer watching the order page would.
        let end = ContinuousClock.now + followFor
        while ContinuousClock.now < end, !Task.isCancelled {
            if let answer = await reliably(.GET, "/v1/orders/\(id)", token: session.token, edge: &edge, retryNotFound: true), answer.status == 200,
               case .string(let status)? = answer.json["status"], status == "completed" || status == "cancelled" {
                return
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    private func cartReady(_ order: ShopperMix.Order, session: inout Session, email: String, password: String, edge: inout Int,
                           outcome: inout Outcome) async -> Bool {
        let cleared = await reliably(.DELETE, "/v1/cart", token: session.token, edge: &edge)
        guard cleared?.status == 200 else {
            outcome.lastAnswer = "DELETE /v1/cart: " + (cleared?.summary ?? "no answer for \(patience) (faults only)")
            return false
        }
        for line in order.lines {
            let answer = await reliably(.PUT, "/v1/cart/lines/\(line.productID)", json: #"{"quantity": \#(line.quantity)}"#, token: session.token,
                                        edge: &edge)
            guard answer?.status == 200 else {
                outcome.lastAnswer = "PUT /v1/cart/lines/\(line.productID): " + (answer?.summary ?? "no answer for \(patience) (faults only)")
                return false
            }
        }
        return true
    }

    // MARK: - Requests that ride out faults

    /// Sends a request until it gets an answer that is not a fault of the fleet, or `patience`
    /// passes (nil). `retryNotFound` also retries a 404 (an order not in the store yet).
    private func reliably(_ method: HTTPMethod, _ path: String, json: String? = nil, token: String? = nil, headers: [(String, String)] = [],
                          edge: inout Int, retryNotFound: Bool = false) async -> Answer? {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(2))
        let giveUp = ContinuousClock.now + patience
        var notFound = 0
        while ContinuousClock.now < giveUp, !Task.isCancelled {
            counters.withLock { $0.requests += 1 }
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(edges[edge])\(path)")
            request.method = method
            if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let json {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: json))
            }
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(15))
                let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                let status = Int(response.status.code)
                let retry: Bool
                switch status {
                case 500...599: retry = true; counters.withLock { $0.serverErrors += 1 }
                case 429: retry = true; counters.withLock { $0.tooManyRequests += 1 }
                case 404 where retryNotFound && notFound < 40: retry = true; notFound += 1
                default: retry = false
                }
                if !retry {
                    let object = (try? JSONDecoder().decode([String: AnswerValue].self, from: Data(text.utf8))) ?? [:]
                    return Answer(status: status, text: text, json: object)
                }
            } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
                counters.withLock { $0.timeouts += 1 }
            } catch {
                counters.withLock { $0.connectionFailures += 1 }
                // That edge may be gone (killed): the next try goes to another.
                edge = (edge + 1) % edges.count
            }
            counters.withLock { $0.retries += 1 }
            try? await Task.sleep(for: backoff.next())
        }
        return nil
    }
}

/// A JSON value of an answer, as far as the driver reads answers.
enum AnswerValue: Decodable, Sendable {
    case string(String)
    case other

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) { self = .string(text) } else { self = .other }
    }
}

func seconds(since start: ContinuousClock.Instant) -> Double { (ContinuousClock.now - start).seconds }
