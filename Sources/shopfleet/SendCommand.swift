import AMQPClient
import ArgumentParser
import Contracts
import FoundationEssentials
import Messaging
import WorkerHost

/// `shopfleet send`: publishes one command of the fleet's contracts, from JSON, with a confirm.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send a command (JSON) to the domain that owns it; prints its message id once the broker confirmed it.",
        discussion: """
            Example: shopfleet send inventory.AdjustStock.v1 '{"sku": "MUG-001", "delta": 10, "reason": "delivery"}'
            The JSON is checked against the contract (and its validation) before anything is sent.
            `shopfleet send --list` prints every command type.
            """)

    @Argument(help: "The command's type, e.g. orders.PlaceOrder.v1.") var type: String?
    @Argument(help: "The body as JSON; '-' or nothing reads standard input.") var json: String?
    @Option(help: "The saga id header to set.") var sagaID: String?
    @Flag(help: "List the command types.") var list = false
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        if list {
            for contract in ContractCatalog.all where contract is any Command.Type { print(contract.type) }
            return
        }
        guard let type else { throw ValidationError("name a command type (shopfleet send --list shows them)") }
        guard let contract = ContractCatalog.all.first(where: { $0.type == type }) else {
            throw ValidationError("no message type '\(type)' (shopfleet send --list shows the commands)")
        }
        guard let command = contract as? any Command.Type else {
            throw ValidationError("\(type) is not a command" + (contract is any Query.Type ? "; ask it with shopfleet ask" : ""))
        }
        let envelope = try checkedEnvelope(command, body: try readBody(json), sagaID: sagaID)
        try await publish(envelope, to: command.queue, config: try connection.configuration())
        print(envelope.messageID)
    }
}

/// `shopfleet ask`: a query over request/reply; prints the reply as JSON.
struct AskCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ask",
        abstract: "Ask a query (JSON) of the domain that owns it and print the reply.",
        discussion: "Example: shopfleet ask orders.GetOrder.v1 '{\"orderID\": \"…\"}'")

    @Argument(help: "The query's type, e.g. catalog.GetProducts.v1.") var type: String
    @Argument(help: "The body as JSON; '-' or nothing reads standard input.") var json: String?
    @Option(help: "How long to wait for the reply, e.g. 5s.") var timeout = "5s"
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        guard let query = queryType(named: type) else {
            throw ValidationError("no query type '\(type)'; the queries are: " + queryTypeNames().joined(separator: ", "))
        }
        let body = try readBody(json)
        let config = try connection.configuration()
        let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet ask"))
        do {
            let client = try await QueryClient(connection: amqp)
            print(try await query.askJSON(body, client: client, timeout: try parseAge(timeout)))
            await amqp.close()
        } catch {
            await amqp.close()
            throw error
        }
    }

}

extension Query {
    /// Decodes a query of this type from JSON, asks it, and returns the reply as JSON.
    static func askJSON(_ body: [UInt8], client: QueryClient, timeout: Duration) async throws -> String {
        let query = try MessageCodec.decode(Self.self, from: body, typeName: type)
        let reply = try await client.ask(query, timeout: timeout)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(reply), as: UTF8.self)
    }
}

private func queryType(named name: String) -> (any Query.Type)? {
    for contract in ContractCatalog.all where contract.type == name {
        if let query = contract as? any Query.Type { return query }
    }
    return nil
}

private func queryTypeNames() -> [String] {
    var names: [String] = []
    for contract in ContractCatalog.all where contract is any Query.Type { names.append(contract.type) }
    return names
}

private func readBody(_ argument: String?) throws -> [UInt8] {
    if let argument, argument != "-" { return Array(argument.utf8) }
    var bytes: [UInt8] = []
    while let line = readLine(strippingNewline: false) { bytes += Array(line.utf8) }
    return bytes
}

/// Decodes and validates the body as `C`, so that what is sent is what the worker will accept.
private func checkedEnvelope<C: Command>(_ type: C.Type, body: [UInt8], sagaID: String?) throws -> Envelope {
    let command = try MessageCodec.decode(C.self, from: body, typeName: C.type)
    if let validatable = command as? any Validatable {
        do { try validatable.validate() } catch { throw ValidationError("\(C.type) is not valid: \(error)") }
    }
    return try Envelope(command, sagaID: sagaID)
}

/// Publishes one message to a queue on a short connection of its own and returns once the broker
/// confirmed it: what every CLI command that sends something uses.
func publish(_ envelope: Envelope, to queue: String, config: ShopfleetConfiguration) async throws {
    let amqp = try await AMQPConnection.connect(try AMQPConfiguration(url: config.amqpURL, connectionName: "shopfleet \(envelope.type)"))
    do {
        let channel = try await amqp.openChannel()
        try await channel.enableConfirms()
        try await channel.publish(envelope.body, routingKey: queue, properties: envelope.properties, mandatory: true)
        await amqp.close()
    } catch {
        await amqp.close()
        throw error
    }
}
