public import AMQPClient
import ClientRuntime
import FoundationEssentials
public import Logging
import Metrics
public import PostgresClient
public import Prometheus
import ServiceLifecycle
import UnixSignals
import Synchronization

/// A domain's worker, as the domain describes it: where its tables live, what it consumes, and
/// its handlers.
public struct WorkerDefinition: Sendable {
    public var service: String
    public var schema: String
    public var queues: [String]
    /// The domain's own migrations (versions from 100; 1 to 99 are the runtime's).
    public var migrations: [Migration]
    public var handlers: HandlerRegistry
    /// Work on a timer (saga timeouts, expiries), run by every replica.
    public var jobs: [ScheduledJob]

    public init(service: String, schema: String, queues: [String], migrations: [Migration] = [], handlers: HandlerRegistry,
                jobs: [ScheduledJob] = []) {
        self.service = service
        self.schema = schema
        self.queues = queues
        self.migrations = migrations
        self.handlers = handlers
        self.jobs = jobs
    }
}

/// Everything a worker process reads from its configuration.
public struct WorkerSettings: Sendable {
    public var amqpURL: String
    public var databaseURL: String
    public var topologyFile: String
    public var httpPort: Int
    /// The address the ops port listens on (`SHOPFLEET_BIND_ADDRESS`): loopback unless a pod needs more.
    public var bindAddress: String = "127.0.0.1"
    public var prefetch: UInt16
    public var concurrency: Int
    /// Messages a consumer handles in one transaction (``WorkerOptions/batchSize``).
    public var batchSize: Int = 1
    /// ``WorkerOptions/batchWait``.
    public var batchWait: Duration = .zero
    /// ``WorkerOptions/batchLockTimeout``.
    public var batchLockTimeout: Duration = WorkerOptions.defaultBatchLockTimeout
    /// ``WorkerOptions/beforeBatchLockTimeout``.
    public var beforeBatchLockTimeout: Duration = WorkerOptions.defaultBeforeBatchLockTimeout
    public var migrateOnStart: Bool
    public var logLevel: Logger.Level

    public init(amqpURL: String, databaseURL: String, topologyFile: String = "topology/shopfleet.yaml",
                httpPort: Int = 9090, prefetch: UInt16 = 1, concurrency: Int = 8, migrateOnStart: Bool = true,
                logLevel: Logger.Level = .info) {
        self.amqpURL = amqpURL
        self.databaseURL = databaseURL
        self.topologyFile = topologyFile
        self.httpPort = httpPort
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.migrateOnStart = migrateOnStart
        self.logLevel = logLevel
    }
}

/// Runs one worker as a process: logging and metrics, connections (waiting for the servers with
/// backoff), migrations, a check that its queues exist, then the worker and the ops port until
/// SIGTERM or SIGINT.
public enum WorkerProcess {
    private static let bootstrapped = Mutex<PrometheusCollectorRegistry?>(nil)

    /// JSON logs and the Prometheus registry, once per process.
    public static func bootstrap(level: Logger.Level) -> PrometheusCollectorRegistry {
        bootstrapped.withLock { registry in
            if let registry { return registry }
            let created = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: created))
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, level: level) }
            registry = created
            return created
        }
    }

    public static func run(_ definition: WorkerDefinition, settings: WorkerSettings, hooks: WorkerHooks = WorkerHooks()) async throws {
        let registry = bootstrap(level: settings.logLevel)
        var logger = Logger(label: "shopfleet.\(definition.service)")
        logger.logLevel = settings.logLevel
        logger[metadataKey: "service"] = .string(definition.service)

        let topology = try Topology(contentsOfFile: settings.topologyFile)
        for queue in definition.queues where !topology.declares(queue: queue) {
            throw MessagingError("\(definition.service) consumes '\(queue)', which \(settings.topologyFile) does not declare")
        }
        let postgresConfiguration = try PostgresConfiguration(url: settings.databaseURL)
        let amqpConfiguration = try AMQPConfiguration(url: settings.amqpURL, connectionName: "shopfleet \(definition.service)")

        // Waiting for the database and migrating go through a connection of their own.
        let setup = PostgresClient(configuration: postgresConfiguration, maximumConnections: 1)
        do {
            try await waitFor("PostgreSQL at \(postgresConfiguration.host):\(postgresConfiguration.port)", logger: logger) {
                _ = try await setup.query("SELECT 1")
            }
            if settings.migrateOnStart {
                let applied = try await Migrator(client: setup, schema: definition.schema)
                    .migrate(try RuntimeMigrations.with(definition.migrations))
                if !applied.isEmpty { logger.info("migrated", metadata: ["schema": .string(definition.schema), "versions": .string("\(applied)")]) }
            }
        } catch {
            await setup.close()
            throw error
        }
        await setup.close()
        let amqp = try await waitFor("RabbitMQ at \(amqpConfiguration.host):\(amqpConfiguration.port)", logger: logger) {
            try await AMQPConnection.connect(amqpConfiguration, logger: logger)
        }
        // The worker's PostgreSQL connections are driven by its AMQP connection's thread, where its
        // consumers and handlers run: a handler awaits its round trips without waking another thread.
        let database = PostgresClient(configuration: postgresConfiguration, maximumConnections: settings.concurrency * definition.queues.count + 2,
                                      logger: logger, on: amqp.connectionThread)
        do {
            try await checkTopology(definition.queues, topology: topology, amqp: amqp)
        } catch {
            await database.close()
            await amqp.close()
            throw error
        }

        var options = WorkerOptions(service: definition.service, schema: definition.schema, queues: definition.queues)
        options.prefetch = settings.prefetch
        options.concurrency = settings.concurrency
        options.batchSize = settings.batchSize
        options.batchWait = settings.batchWait
        options.batchLockTimeout = settings.batchLockTimeout
        options.beforeBatchLockTimeout = settings.beforeBatchLockTimeout
        let worker = Worker(options: options, topology: topology, handlers: definition.handlers, jobs: definition.jobs,
                            amqp: amqp, database: database, logger: logger, hooks: hooks)
        let ops = OpsServer(host: settings.bindAddress, port: settings.httpPort, registry: registry, logger: logger) { worker.health.problem }
        // Shut down in reverse order: the worker drains first while /healthz still answers.
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: ops), .init(service: worker)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        configuration.maximumGracefulShutdownDuration = options.shutdownDeadline + .seconds(2)
        configuration.maximumCancellationDuration = .seconds(2)
        let group = ServiceGroup(configuration: configuration)
        do {
            try await group.run()
        } catch {
            logger.error("worker stopped", metadata: ["error": .string("\(error)")])
            // The database's connections run on the AMQP connection's thread: close them first.
            await database.close()
            await amqp.close()
            throw error
        }
        await database.close()
        await amqp.close()
        logger.info("worker stopped")
    }

    /// Checks, before consuming, that the broker has what this worker needs; says what to do if not.
    public static func checkTopology(_ queues: [String], topology: Topology, amqp: AMQPConnection) async throws {
        let channel = try await amqp.openChannel()
        defer { Task { try? await channel.close() } }
        let exchanges = [topology.deadLetterExchange] + topology.retryTiers.map(\.queue)
        for exchange in exchanges {
            do {
                try await channel.declareExchange(exchange, type: .fanout, passive: true)
            } catch {
                throw MessagingError("exchange '\(exchange)' does not exist on the broker: apply the topology (`shopfleet topology apply`)")
            }
        }
        for queue in queues {
            do {
                try await channel.declareQueue(queue, passive: true)
            } catch {
                throw MessagingError("queue '\(queue)' does not exist on the broker: apply the topology (`shopfleet topology apply`)")
            }
        }
    }

    /// Retries `body` with backoff until it succeeds, logging each failure: a worker started
    /// before its servers waits for them.
    public static func waitFor<T>(_ what: String, logger: Logger, _ body: () async throws -> T) async throws -> T {
        var backoff = Backoff(initial: .milliseconds(250), maximum: .seconds(5))
        while true {
            do {
                return try await body()
            } catch {
                if error is CancellationError || Task.isCancelled { throw error }
                let delay = backoff.next()
                logger.warning("waiting for \(what)", metadata: ["error": .string("\(error)"), "retry_in": .string("\(delay)")])
                try await Task.sleep(for: delay)
            }
        }
    }
}
