// swift-tools-version:6.1
import PackageDescription

/// One set of settings for every Swift target: upcoming features that keep APIs honest
/// (imports say `public import` when they leak into the API).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "shopfleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "shopfleet", targets: ["shopfleet"]),
        .executable(name: "shopfleet-worker", targets: ["shopfleet-worker"]),
        .executable(name: "shopfleet-worker-ext", targets: ["shopfleet-worker-ext"]),
        .library(name: "AMQPClient", targets: ["AMQPClient"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "Messaging", targets: ["Messaging"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.21.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.1.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.0.0"),
    ],
    targets: [
        // C libraries, found through pkg-config; the providers name the Debian packages.
        .systemLibrary(
            name: "CRabbitMQ", pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(
            name: "CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),
        .systemLibrary(
            name: "CHiredis", pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]),

        // What the three clients share: the dedicated thread each C connection lives on, a bounded pool, backoff.
        .target(
            name: "ClientRuntime",
            swiftSettings: swiftSettings),

        .target(
            name: "AMQPClient",
            dependencies: [
                "CRabbitMQ", "ClientRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibPQ", "ClientRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis", "ClientRuntime",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // The machinery every worker runs on: envelope, topology as code, the worker runtime with
        // inbox, outbox, retries and dead-lettering, request/reply, health and metrics.
        .target(
            name: "Messaging",
            dependencies: [
                "AMQPClient", "PostgresClient", "ClientRuntime",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings),

        // The RabbitMQ management API (topology apply and diff, virtual hosts): for the CLI and the
        // tests, kept out of Messaging so that a worker links no HTTP client.
        .target(
            name: "RabbitManagement",
            dependencies: [
                "Messaging", "ClientRuntime",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),

        // The generic saga engine: a pure definition, run against tables in the host's schema.
        .target(
            name: "Sagas",
            dependencies: ["Messaging", "PostgresClient", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: swiftSettings),

        // The dead-letter store, its worker, and what `shopfleet dlq` and `saga show` read from it.
        .target(
            name: "DeadLetters",
            dependencies: ["Contracts", "Messaging", "AMQPClient", "PostgresClient",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: swiftSettings),

        // Every command, event and query of every domain.
        .target(
            name: "Contracts",
            dependencies: ["Messaging"],
            swiftSettings: swiftSettings),

        // The domains. Each depends on Messaging, Contracts and the clients, never on another domain.
        .target(name: "Catalog", dependencies: ["Contracts", "Messaging", "PostgresClient"], swiftSettings: swiftSettings),
        .target(
            name: "Inventory",
            dependencies: ["Contracts", "Messaging", "PostgresClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(
            name: "Payments",
            dependencies: [
                "Contracts", "Messaging", "PostgresClient", "ClientRuntime",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // Access tokens (JWT, signed by identity, verified by the edge) and bcrypt off the cooperative pool.
        .target(
            name: "Auth",
            dependencies: [
                "ClientRuntime",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "Identity",
            dependencies: ["Contracts", "Messaging", "PostgresClient", "Auth", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .target(name: "Cart", dependencies: ["Contracts", "Messaging", "PostgresClient", "RedisClient", .product(name: "Logging", package: "swift-log")],
                swiftSettings: swiftSettings),
        .target(name: "Search", dependencies: ["Contracts", "Messaging", "PostgresClient"], swiftSettings: swiftSettings),
        .target(
            name: "Notifications",
            dependencies: [
                "Contracts", "Messaging", "PostgresClient", "ClientRuntime",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "Orders",
            dependencies: ["Contracts", "Messaging", "Sagas", "PostgresClient", .product(name: "Logging", package: "swift-log"),
                           .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: swiftSettings),

        // The HTTP edge: depends on the contracts and the messaging runtime, never on a domain or the database.
        .target(
            name: "Edge",
            dependencies: [
                "Contracts", "Messaging", "AMQPClient", "RedisClient", "Auth", "RabbitManagement",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),

        // A local Stripe-compatible gateway (`shopfleet payments-sandbox`) for development and tests.
        .target(
            name: "PaymentsSandbox",
            dependencies: [
                "Payments",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // The local fleet: which processes (every role, its replicas, ports, settings) and a supervisor
        // that runs them. `shopfleet dev`, the benchmarks, the chaos runner and the tests start fleets
        // only through it.
        .target(
            name: "Fleet",
            dependencies: [
                "ClientRuntime", "Messaging", "PostgresClient", "RabbitManagement",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),

        // `shopfleet chaos`: customers over HTTP, a seeded fault schedule, the ledger read from every
        // store. The schedule, the mix of orders and the ledger's checks are values, tested alone.
        .target(
            name: "Chaos",
            dependencies: [
                "Auth", "Fleet", "ClientRuntime", "Contracts", "Messaging", "AMQPClient", "PostgresClient", "RabbitManagement",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),

        // Shared by the test targets: server URLs from the environment, fault injection.
        .target(
            name: "ShopfleetTesting",
            dependencies: ["ClientRuntime", "Messaging", "PostgresClient", "RabbitManagement"],
            swiftSettings: swiftSettings),

        // The configuration surface every process shares, the parent watch of `shopfleet dev`'s
        // children, and the domains whose workers need only the runtime (with `shopfleet worker`'s arguments).
        .target(
            name: "WorkerHost",
            dependencies: [
                "ClientRuntime", "Messaging", "PostgresClient", "RedisClient",
                "Catalog", "Inventory", "Orders", "Search", "Cart", "DeadLetters",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // The small worker executable: the runtime-only domains, no HTTP client, no web framework,
        // no Foundation beyond FoundationEssentials. `shopfleet worker <domain>` becomes it.
        // Payments, notifications and identity: an HTTP client with TLS, token signing.
        .target(
            name: "ServiceDomains",
            dependencies: [
                "WorkerHost", "Messaging", "Identity", "Notifications", "Payments", "Auth",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "shopfleet-worker-ext",
            dependencies: ["ServiceDomains", "WorkerHost", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "shopfleet-worker",
            dependencies: ["WorkerHost", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "shopfleet",
            dependencies: [
                "AMQPClient", "PostgresClient", "RedisClient", "Messaging", "Contracts", "Sagas",
                "Catalog", "Inventory", "Orders", "Payments", "PaymentsSandbox", "Notifications", "Search", "Identity", "Auth", "Cart", "Edge", "ClientRuntime",
                "DeadLetters", "RabbitManagement", "WorkerHost", "ServiceDomains", "Fleet", "Chaos",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(name: "ClientRuntimeTests", dependencies: ["ClientRuntime"], swiftSettings: swiftSettings),
        .testTarget(name: "AMQPClientTests", dependencies: ["AMQPClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        // A worker with test handlers, run as its own process by the runtime's tests.
        .executableTarget(
            name: "FixtureWorker",
            dependencies: ["Messaging", "PostgresClient"],
            path: "Tests/FixtureWorker",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "MessagingTests",
            dependencies: [
                "FixtureWorker", "Messaging", "AMQPClient", "PostgresClient", "ClientRuntime", "ShopfleetTesting", "RabbitManagement",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "DeadLetterTests",
            dependencies: [
                "DeadLetters", "FixtureWorker", "Messaging", "AMQPClient", "PostgresClient", "ClientRuntime", "ShopfleetTesting", "Fleet",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "ContractsTests", dependencies: ["Contracts", "Messaging", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "ShopfleetTests", dependencies: ["shopfleet", "WorkerHost", "Messaging", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                    swiftSettings: swiftSettings),
        .testTarget(
            name: "PaymentsTests",
            dependencies: [
                "Payments", "PaymentsSandbox", "ClientRuntime", "ShopfleetTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings),
        // The checkout across separate worker processes (it runs the shopfleet binary).
        .testTarget(
            name: "CheckoutTests",
            dependencies: [
                "Contracts", "Messaging", "Sagas", "Orders", "Payments", "PaymentsSandbox", "Notifications", "Auth", "Edge", "AMQPClient", "PostgresClient", "RedisClient",
                "ClientRuntime", "ShopfleetTesting", "Fleet", "Identity", "RabbitManagement",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "SearchTests", dependencies: ["Search", "Contracts", "Messaging", "PostgresClient", "ShopfleetTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "NotificationsTests", dependencies: ["Notifications", "ClientRuntime"], swiftSettings: swiftSettings),
        .testTarget(name: "FleetTests", dependencies: ["Fleet"], swiftSettings: swiftSettings),
        .testTarget(name: "ChaosTests", dependencies: ["Chaos", "Fleet", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "OrdersTests", dependencies: ["Orders", "Sagas", "Contracts", "Messaging"], swiftSettings: swiftSettings),
    ]
)
