import AMQPClient
import Auth
import ClientRuntime
import Fleet
import FoundationEssentials
import Messaging
import NIOHTTP1
import PostgresClient
import RabbitManagement
import ShopfleetTesting
import Testing

/// Each service as its own broker user and database role: what it has no business doing, the
/// broker or the database refuses (ACCESS_REFUSED, SQLSTATE 42501); what it does, it may.
@Suite struct LeastPrivilegeTests {
    /// The test servers' (`SHOPFLEET_FLEET_SECRET` from `scripts/servers.sh env test`).
    let identities: FleetIdentities

    init() throws { identities = try FleetIdentities(secret: CheckoutFleet.fleetSecret) }

    /// A connection as `service`'s broker user.
    func connect(_ service: String, _ sandbox: BrokerSandbox) async throws -> AMQPConnection {
        try await AMQPConnection.connect(try AMQPConfiguration(url: identities.amqpURL(sandbox.amqpURL, service: service), connectionName: "test as \(service)"))
    }

    /// `body` on a fresh channel of `connection` must fail with 403 ACCESS_REFUSED.
    func refused(_ what: String, on connection: AMQPConnection, _ body: (AMQPChannel) async throws -> Void) async throws {
        let channel = try await connection.openChannel()
        do {
            try await body(channel)
            Issue.record("\(what) was allowed")
        } catch let error as AMQPError {
            #expect(error.replyCode == 403 && error.message.contains("ACCESS_REFUSED"), "\(what): \(error)")
        }
    }

    @Test func eachServiceMayConsumeBindAndPublishOnlyWhereItsServiceHasBusiness() async throws {
        let sandbox = try await BrokerSandbox.create(topologyFile: BrokerSandbox.fleetTopologyFile)
        do {
            let permissions = try await identities.applyBrokerUsers(sandbox.topology, vhost: sandbox.vhost, management: sandbox.management)
            // The broker holds exactly the rights topology/permissions.json lists (rendered from the topology).
            let rendered = try JSONDecoder().decode([BrokerPermissions].self,
                                                    from: Data(contentsOf: URL(fileURLWithPath: TestServers.repositoryRoot + "/topology/permissions.json")))
            #expect(rendered == permissions)
            for entry in permissions {
                let have = try #require(try await sandbox.management.permissions(of: entry.user, vhost: sandbox.vhost))
                #expect(have.configure == entry.configure && have.write == entry.write && have.read == entry.read, "\(entry.user)")
            }

            let edge = try await connect("edge", sandbox)
            let cart = try await connect("cart", sandbox)
            let orders = try await connect("orders", sandbox)
            let payments = try await connect("payments", sandbox)
            // Refused: consuming another service's queue, publishing on another's topic, binding
            // or declaring anything of the topology, reading with basic.get.
            try await refused("the edge consuming payments.commands", on: edge) { _ = try await $0.consume(queue: "payments.commands") }
            try await refused("the edge declaring a queue outside edge.*", on: edge) {
                _ = try await $0.declareQueue("payments.sneaky", durable: false, exclusive: true, autoDelete: true)
            }
            try await refused("cart publishing to orders.events", on: cart) { channel in
                try await channel.enableConfirms()
                try await channel.publish("{}", exchange: "orders.events", routingKey: "orders.OrderConfirmed.v1")
            }
            try await refused("cart binding its queue to orders.events", on: cart) {
                try await $0.bindQueue("cart.queries", to: "orders.events", routingKey: "#")
            }
            try await refused("orders reading payments.commands", on: orders) { _ = try await $0.get(queue: "payments.commands") }
            try await refused("orders declaring an exchange", on: orders) { try await $0.declareExchange("orders.shadow", type: .fanout) }
            try await refused("payments binding another queue to its topic", on: payments) {
                try await $0.bindQueue("orders.saga-events", to: "payments.events", routingKey: "#")
            }

            // Allowed: what each does for its work.
            let own = try await orders.openChannel()
            try await own.enableConfirms()
            try await own.publish("{}", exchange: "orders.events", routingKey: "orders.Nothing.v1")
            try await own.publish("{}", routingKey: "payments.commands")  // a command, on the default exchange
            let consumer = try await (try await payments.openChannel()).consume(queue: "payments.commands")
            try await consumer.cancel()
            let follower = try await edge.openChannel()
            let queue = "edge.products.\(UInt32.random(in: 0...UInt32.max))"
            _ = try await follower.declareQueue(queue, durable: false, exclusive: true, autoDelete: true)
            try await follower.bindQueue(queue, to: "catalog.events", routingKey: "catalog.ProductUpserted.v1")
            try await (try await follower.consume(queue: queue)).cancel()

            // A service's user cannot use the management API at all.
            let url = try ServerURL(try TestServers.managementURL(), schemes: ["http"])
            let asCart = try RabbitManagement(url: "http://\(FleetIdentities.brokerUser("cart")):\(identities.brokerPassword("cart"))@\(url.host):\(url.port ?? 15672)")
            await #expect(throws: RabbitManagement.Failure.self) { _ = try await asCart.queues(vhost: sandbox.vhost) }
            for connection in [edge, cart, orders, payments] { await connection.close() }
        } catch {
            await sandbox.remove()
            throw error
        }
        await sandbox.remove()
    }

    @Test func aServiceRoleCannotReadOrWriteAnotherServicesSchema() async throws {
        let scratch = try await ScratchDatabase.create("roles")
        let operatorClient = PostgresClient(configuration: try PostgresConfiguration(url: scratch.url), maximumConnections: 1)
        func client(_ service: String) throws -> PostgresClient {
            PostgresClient(configuration: try PostgresConfiguration(url: identities.databaseURL(scratch.url, service: service)), maximumConnections: 1)
        }
        let orders = try client("orders"), cart = try client("cart")
        do {
            let report = try await identities.applyDatabaseRoles(operatorClient)
            #expect(report.count == FleetIdentities.databaseServices.count)
            // Orders migrates and works in its own schema.
            try await Migrator(client: orders, schema: "orders").migrate([Migration(version: 1, name: "t", sql: "CREATE TABLE secrets (x text)")])
            try await orders.query("INSERT INTO orders.secrets VALUES ('mine')")
            // Cart may not read, write, or create there, nor make a schema of its own.
            for sql in ["SELECT * FROM orders.secrets", "INSERT INTO orders.secrets VALUES ('x')", "CREATE TABLE orders.more (x int)",
                        "CREATE SCHEMA stolen", "CREATE TABLE public.loot (x int)"] {
                do {
                    try await cart.query(sql)
                    Issue.record("cart ran \(sql)")
                } catch let error as PostgresError {
                    #expect(error.sqlState == "42501", "\(sql): \(error)")
                }
            }
            // The migrations identity, migrating orders' schema, leaves what it makes to orders.
            try await Migrator(client: operatorClient, schema: "orders").migrate([
                Migration(version: 1, name: "t", sql: "CREATE TABLE secrets (x text)"),
                Migration(version: 2, name: "u", sql: "CREATE TABLE more_secrets (x text)"),
            ])
            #expect(try await operatorClient.query("SELECT tableowner FROM pg_tables WHERE schemaname = 'orders' AND tablename = 'more_secrets'").first?.text(0)
                    == FleetIdentities.databaseRole("orders"))
            try await orders.query("INSERT INTO orders.more_secrets VALUES ('mine too')")
            // Provisioning again changes nothing and keeps working.
            _ = try await identities.applyDatabaseRoles(operatorClient)
            try await orders.query("SELECT * FROM orders.more_secrets")
        } catch {
            for c in [orders, cart, operatorClient] { await c.close() }
            await scratch.drop()
            throw error
        }
        for c in [orders, cart, operatorClient] { await c.close() }
        await scratch.drop()
    }

    /// Every process gets its own secrets only; none is on a command line or in a log.
    @Test func noProcessHoldsAnotherServicesSecretsAndNoneIsInArgvOrLogs() async throws {
        try await CheckoutFleet.with { fleet in
            let environment = fleet.supervisor.plan
            func password(_ url: String) throws -> String {
                try #require(try ServerURL(url, schemes: ["postgres", "postgresql", "amqp", "http", "redis"]).password)
            }
            // The operator's: the fleet secret, the migrations identity's and the broker
            // administrator's passwords. Redis has one password, for cart and the edge only.
            let operatorSecrets = [CheckoutFleet.fleetSecret, try password(TestServers.databaseURL()), try password(TestServers.amqpURL()),
                                   try password(TestServers.managementURL())]
            let redisPassword = try password(TestServers.redisURL())
            let paymentsKey = try #require(environment.process("payments")?.environment["SHOPFLEET_PAYMENTS_API_KEY"])
            var every = operatorSecrets + [redisPassword, paymentsKey, String(CheckoutFleet.signingKey.split(separator: ":")[1])]
            for service in FleetIdentities.databaseServices { every.append(identities.databasePassword(service)) }
            for service in FleetPlan.workerRoles + ["edge"] { every.append(identities.brokerPassword(service)) }

            for process in environment.processes where process.kind != .smtpSink {
                let pid = try #require(fleet.supervisor.pid(of: process.name))
                let argv = try String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
                for secret in every { #expect(!argv.contains(secret), "\(process.name)'s argv holds a secret") }
                let environ = try String(contentsOfFile: "/proc/\(pid)/environ", encoding: .utf8).split(separator: "\0").map(String.init)
                let own = Set(environ)
                // Its own broker password only; a database password only for a worker, its own.
                for service in FleetPlan.workerRoles + ["edge"] where service != process.role {
                    #expect(!environ.contains { $0.contains(identities.brokerPassword(service)) }, "\(process.name) holds \(service)'s broker password")
                    if FleetIdentities.databaseServices.contains(service) {
                        #expect(!environ.contains { $0.contains(identities.databasePassword(service)) }, "\(process.name) holds \(service)'s database password")
                    }
                }
                for (index, secret) in operatorSecrets.enumerated() {
                    #expect(!environ.contains { $0.contains(secret) }, "\(process.name) holds operator secret #\(index)")
                }
                #expect(!environ.contains { $0.contains(redisPassword) } || ["cart", "edge"].contains(process.role), "\(process.name) holds Redis's password")
                #expect(!own.contains { $0.hasPrefix("SHOPFLEET_JWT_SIGNING_KEY=") } || process.role == "identity", "\(process.name) can sign tokens")
                #expect(!own.contains { $0.hasPrefix("SHOPFLEET_PAYMENTS_API_KEY=") } || ["payments", "payments-sandbox"].contains(process.role),
                        "\(process.name) holds the gateway key")
                if process.role == "edge" {
                    #expect(!own.contains { $0.hasPrefix("SHOPFLEET_DATABASE_URL") }, "the edge has database credentials")
                    #expect(own.contains { $0.hasPrefix("SHOPFLEET_JWT_PUBLIC_KEYS=") })
                }
            }
            // Shop a little so every process logs, then scan the logs.
            let email = "lp-\(UInt32.random(in: 0...UInt32.max))@example.com"
            _ = try await EdgeTests().call(fleet, .POST, "/v1/auth/register", json: #"{"email": "\#(email)", "password": "a long password", "name": "LP"}"#)
            let login = try await EdgeTests().call(fleet, .POST, "/v1/auth/login", json: #"{"email": "\#(email)", "password": "a long password"}"#)
            #expect(login.status == 200)
            for process in environment.processes {
                let log = (try? String(contentsOfFile: "\(fleet.logDirectory)/\(process.name).log", encoding: .utf8)) ?? ""
                for secret in every { #expect(!log.contains(secret), "\(process.name)'s log holds a secret") }
            }
        }
    }
}
