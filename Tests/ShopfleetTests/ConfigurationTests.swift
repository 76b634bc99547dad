import ArgumentParser
import FoundationEssentials
import Messaging
@testable import shopfleet
import WorkerHost
import Testing

@Suite("Configuration surface")
struct ConfigurationTests {
    @Test func defaultsEnvironmentFilesAndFlagsInThatOrder() throws {
        let secretFile = "/tmp/shopfleet-config-test-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: secretFile, contents: Data("postgres://app:fromfile@db:5432/x\n".utf8)))
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        let config = try ShopfleetConfiguration(
            environment: [
                "SHOPFLEET_AMQP_URL": "amqp://a:b@broker:5672/%2F",
                "SHOPFLEET_DATABASE_URL_FILE": secretFile,
            ],
            overrides: ["SHOPFLEET_REDIS_URL": "redis://flag:6379/1"])
        #expect(config.amqpURL == "amqp://a:b@broker:5672/%2F")
        #expect(config.source(ShopfleetConfiguration.amqpURL) == .environment)
        #expect(config.databaseURL == "postgres://app:fromfile@db:5432/x")
        #expect(config.source(ShopfleetConfiguration.databaseURL) == .file)
        #expect(config.redisURL == "redis://flag:6379/1")
        #expect(config.source(ShopfleetConfiguration.redisURL) == .flag)
        #expect(config.amqpManagementURL == ShopfleetConfiguration.amqpManagementURL.defaultValue)
        #expect(config.source(ShopfleetConfiguration.amqpManagementURL) == .default)
    }

    @Test func unreadableSecretFileIsAClearError() {
        let error = #expect(throws: ShopfleetConfiguration.Invalid.self) {
            try ShopfleetConfiguration(environment: ["SHOPFLEET_REDIS_URL_FILE": "/nonexistent/secret"])
        }
        #expect(error?.description.contains("SHOPFLEET_REDIS_URL_FILE") == true)
    }

    /// A worker's batch lock timeouts come from the environment: durations from 1 ms to under
    /// the shutdown deadline (0 would be no timeout to PostgreSQL, and a batch waiting longer
    /// than the deadline would hold up a stop); anything else is refused naming the key and value.
    @Test func batchLockTimeoutsAreDurationsUnderTheShutdownDeadline() throws {
        let keys = [ShopfleetConfiguration.workerBatchLockTimeout, ShopfleetConfiguration.workerBatchFirstLocksTimeout]
        let defaults = try ShopfleetConfiguration(environment: [:])
        #expect(try keys.map { try defaults.lockTimeout($0) } == [.milliseconds(100), .seconds(5)])
        // One set of defaults: the keys' (as the README writes them), a worker process's settings
        // and the runtime's options.
        #expect(keys.map(\.defaultValue) == ["100ms", "5s"])
        let settings = WorkerSettings(amqpURL: "", databaseURL: "")
        let options = WorkerOptions(service: "s", schema: "s", queues: [])
        #expect([settings.batchLockTimeout, settings.beforeBatchLockTimeout] == [.milliseconds(100), .seconds(5)])
        #expect([options.batchLockTimeout, options.beforeBatchLockTimeout] == [.milliseconds(100), .seconds(5)])
        let set = try ShopfleetConfiguration(environment: [keys[0].name: "250ms", keys[1].name: "19s"])
        #expect(try keys.map { try set.lockTimeout($0) } == [.milliseconds(250), .seconds(19)])
        for key in keys {
            for bad in ["0s", "20s", "1m", "soon"] {
                let config = try ShopfleetConfiguration(environment: [key.name: bad])
                let error = #expect(throws: ShopfleetConfiguration.Invalid.self) { try config.lockTimeout(key) }
                #expect(error?.description.contains(key.name) == true && error?.description.contains("'\(bad)'") == true,
                        "\(String(describing: error))")
            }
        }
    }

    /// `bench checkout` refuses a mistyped log level or rate before it sets anything up, naming
    /// the option and what it got.
    @Test func benchCheckoutRefusesABadLogLevelOrRateUpFront() throws {
        #expect(throws: Never.self) { _ = try BenchCheckoutCommand.parse(["--log-level", "info", "--rate", "20,150"]) }
        for (arguments, named) in [(["--log-level", "loud"], "--log-level"), (["--rate", "20,fast"], "--rate")] {
            do {
                _ = try BenchCheckoutCommand.parse(arguments)
                Issue.record("\(arguments) was accepted")
            } catch {
                let message = BenchCheckoutCommand.message(for: error)
                #expect(message.contains(named) && message.contains(arguments[1]), "\(message)")
            }
        }
    }

    @Test func benchRowsEncodeAsTheDocumentedJSONShape() throws {
        let row = BenchRow(metric: "amqp.publish_confirm", unit: "msg/s", value: 900, baseline: 1000, baselineName: "C")
        #expect(row.ratio == 0.9)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(row), as: UTF8.self)
        #expect(json == #"{"baseline":1000,"metric":"amqp.publish_confirm","ratio":0.9,"unit":"msg\/s","value":900}"#)
    }
}
