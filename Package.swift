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
        .library(name: "AMQPClient", targets: ["AMQPClient"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
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

        // Shared by the test targets: server URLs from the environment, fault injection.
        .target(
            name: "ShopfleetTesting",
            dependencies: ["ClientRuntime"],
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "shopfleet",
            dependencies: [
                "AMQPClient", "PostgresClient", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(name: "ClientRuntimeTests", dependencies: ["ClientRuntime"], swiftSettings: swiftSettings),
        .testTarget(name: "AMQPClientTests", dependencies: ["AMQPClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "ClientRuntime", "ShopfleetTesting"], swiftSettings: swiftSettings),
        .testTarget(name: "ShopfleetTests", dependencies: ["shopfleet"], swiftSettings: swiftSettings),
    ]
)
