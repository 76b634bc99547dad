import AMQPClient
import ClientRuntime
import FoundationEssentials
@testable import Messaging
import Testing

private struct Ping: Command {
    static let type = "test.Ping.v1"
    var n: Int
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test func uuidv7IsWellFormedAndOrderedByTime() {
        let early = UUIDv7.generate(at: Date(timeIntervalSince1970: 1_700_000_000))
        let late = UUIDv7.generate(at: Date(timeIntervalSince1970: 1_700_000_001))
        #expect(early < late)
        for id in [early, late, UUIDv7.generate()] {
            #expect(UUID(uuidString: id) != nil)
            let chars = Array(id)
            #expect(chars.count == 36 && chars[14] == "7")
            #expect("89ab".contains(chars[19]))
        }
        #expect(UUIDv7.generate() != UUIDv7.generate())
    }

    @Test func propertiesCarryTheEnvelopeAndComeBack() throws {
        var envelope = try Envelope(Ping(n: 3), sagaID: "saga-1", correlationID: "corr-1")
        envelope.causationID = "cause-1"
        envelope.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        envelope.tracestate = "vendor=x"
        envelope.attempt = 2
        let properties = envelope.properties
        #expect(properties.persistent && properties.contentType == "application/json" && properties.type == "test.Ping.v1")
        let back = try Envelope(delivery: AMQPMessage(body: envelope.body, properties: properties, exchange: "", routingKey: "q"))
        #expect(back == envelope)
        #expect(back.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(String(decoding: back.body, as: UTF8.self) == #"{"n":3}"#)
    }

    @Test func aChildKeepsSagaCorrelationAndTraceButIsCausedByItsParent() throws {
        var parent = try Envelope(Ping(n: 1), sagaID: "s")
        parent.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let child = parent.child(type: "test.Pong.v1", body: [])
        #expect(child.sagaID == "s" && child.causationID == parent.messageID && child.correlationID == parent.messageID)
        #expect(child.traceID == parent.traceID && child.traceparent != parent.traceparent)
        #expect(child.messageID != parent.messageID && child.attempt == 1)
    }

    @Test func messagesWithoutIdOrTypeAreRefusedWithTheReason() {
        let noType = AMQPMessage(body: [], properties: AMQPProperties(messageID: "m"), exchange: "", routingKey: "q")
        #expect(throws: PermanentFailure.self) { try Envelope(delivery: noType) }
        let noID = AMQPMessage(body: [], properties: AMQPProperties(type: "t.T.v1"), exchange: "", routingKey: "q")
        let error = #expect(throws: PermanentFailure.self) { try Envelope(delivery: noID) }
        #expect(error?.kind == "missing-message-id")
    }

    @Test func traceparentParsing() {
        #expect(TraceParent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") != nil)
        #expect(TraceParent("00-00000000000000000000000000000000-b7ad6b7169203331-01") == nil)
        #expect(TraceParent("garbage") == nil)
        let random = TraceParent.random()
        #expect(TraceParent(random.description) == random)
        #expect(random.traceID.count == 32 && random.parentID.count == 16)
        // Upper-case digits are read and kept lower-case; a zero parent id, a non-hex digit, a
        // wrong length or a missing dash is refused.
        let upper = TraceParent("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01")
        #expect(upper?.traceID == "0af7651916cd43dd8448eb211c80319c" && upper?.parentID == "b7ad6b7169203331" && upper?.flags == "01")
        #expect(TraceParent("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01") == nil)
        #expect(TraceParent("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01") == nil)
        #expect(TraceParent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-011") == nil)
        #expect(TraceParent("00-0af7651916cd43dd8448eb211c80319c+b7ad6b7169203331-01") == nil)
        #expect([UInt8]([0x00, 0x0f, 0xa5, 0xff]).lowercaseHex == "000fa5ff")
        let id = UUIDv7.generate()
        #expect(id.count == 36 && id.allSatisfy { $0 == "-" || $0.isHexDigit && !$0.isUppercase })
    }

    @Test func undecodableBodiesNameTheTypeAndTheField() {
        do {
            _ = try MessageCodec.decode(Ping.self, from: Array(#"{"n":"three"}"#.utf8), typeName: Ping.type)
            Issue.record("decoded")
        } catch {
            #expect(error.kind == "undecodable")
            #expect(error.description.contains("not a valid test.Ping.v1") && error.description.contains("n"))
        }
    }
}
