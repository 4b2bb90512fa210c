// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "stovepipe",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stovepipe", targets: ["stovepipe"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // The domain: entities, contracts, controllers. Nothing about HTTP or MySQL.
        .target(
            name: "Domain",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // In-memory stores and topic, and the static and git SourceControl backends.
        .target(
            name: "Backends",
            dependencies: ["Domain", "Conditions", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // A condition variable whose timed waits run on CLOCK_MONOTONIC, and a lock-free swappable reference, for the
        // threads of every layer.
        .target(name: "Conditions", swiftSettings: strict),
        // epoll, eventfd and accept4 for HTTPServer, malloc_trim for the executable (Glibc does not export them).
        .systemLibrary(name: "CEpoll", path: "Sources/CEpoll"),
        // HTTP/1.1 (optionally over TLS) on raw sockets; knows no domain type.
        .target(
            name: "HTTPServer",
            dependencies: ["CEpoll", "COpenSSL", "Conditions", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // libmysqlclient (MariaDB Connector/C on Debian); imported only by MySQLClient.
        .systemLibrary(
            name: "CMySQL",
            pkgConfig: "mysqlclient",
            providers: [.apt(["default-libmysqlclient-dev"])]
        ),
        // A blocking MySQL client: connections, prepared statements, pool. Knows no domain type.
        .target(
            name: "MySQLClient",
            dependencies: ["CMySQL", "Conditions", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The MySQL stores, counter and topic: the only MySQL-code-to-domain-error translation.
        .target(
            name: "MySQLBackend",
            dependencies: [
                "Domain", "MySQLClient", "Conditions",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            resources: [.embedInCode("Schema")],
            swiftSettings: strict
        ),
        // libcrypto's HMAC for webhook signatures; libssl for HTTPServer's TLS.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        // Routes, JSON, problem+json: the single place where domain errors map to statuses.
        .target(
            name: "API",
            dependencies: [
                "Domain", "HTTPServer", "COpenSSL", "Conditions",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            resources: [.embedInCode("Resources/openapi.yaml")],
            swiftSettings: strict
        ),
        // The composition root: config, wiring, signals, shutdown.
        .executableTarget(
            name: "stovepipe",
            dependencies: [
                "Domain", "Backends", "HTTPServer", "MySQLClient", "MySQLBackend", "API", "COpenSSL", "CEpoll", "Conditions",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // scripts/bench-topic: throughput and latency of the MySQL topic against a private MariaDB.
        .executableTarget(
            name: "TopicBench",
            dependencies: ["Domain", "MySQLBackend", "MySQLClient", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/TopicBench",
            swiftSettings: strict
        ),
        // A trivial HTTPServer responder for scripts/bench-http; not part of the product.
        .executableTarget(
            name: "HTTPBenchServer",
            dependencies: ["HTTPServer", .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/HTTPBenchServer",
            swiftSettings: strict
        ),
        // The raw MySQL ceiling for scripts/bench-mysql: the stores' statements looped on bare connections.
        .executableTarget(
            name: "MySQLBench",
            dependencies: ["MySQLClient"],
            path: "Benchmarks/MySQLBench",
            swiftSettings: strict
        ),
        // Waiting helpers and the live MySQL test database, shared by the test targets.
        .target(
            name: "TestSupport", dependencies: ["MySQLClient", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(
            name: "DomainTests",
            dependencies: ["Domain", "Backends", .product(name: "MetricsTestKit", package: "swift-metrics")],
            swiftSettings: strict
        ),
        .testTarget(name: "ContractTests", dependencies: ["Domain", "Backends", "MySQLBackend", "MySQLClient", "TestSupport", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "BackendTests", dependencies: ["Domain", "Backends", "TestSupport", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "HTTPServerTests", dependencies: ["HTTPServer"], swiftSettings: strict),
        .testTarget(name: "ConditionsTests", dependencies: ["Conditions"], swiftSettings: strict),
        .testTarget(
            name: "MySQLTopicTests",
            dependencies: [
                "MySQLBackend", "MySQLClient", "Domain", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "MySQLClientTests", dependencies: ["MySQLClient", "TestSupport", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "APITests", dependencies: ["API", "Domain", "Backends", "HTTPServer"], swiftSettings: strict),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "stovepipe", "API", "Domain", "Backends", "HTTPServer", "MySQLClient", "TestSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
    ]
)
