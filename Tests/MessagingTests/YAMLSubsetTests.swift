@testable import Messaging
import Testing

@Suite("The topology file's YAML")
struct YAMLSubsetTests {
    @Test func readsWhatTheTopologyFileUses() throws {
        let yaml = """
            # a comment
            vhost: /
            dead_letters:
              exchange: shopfleet.dead-letters   # trailing comment
              queue: "quoted: with colon # not a comment"
            retry: {exchange_prefix: r, tiers: [1s, 5s, '2m']}
            defaults:
              delivery_limit: 5
            topics:
              - a.events
              - b.events
            queues:
              - name: q1
              - name: q2
                retries: false
                subscriptions:
                  - topic: a.events
                    filter: ["a.#", a.Thing.*]
            list_at_key_indent:
            - x
            - y
            empty:
            """
        let value = try YAMLSubset.parse(yaml)
        let expected: JSONValue = .object([
            "vhost": .string("/"),
            "dead_letters": .object(["exchange": .string("shopfleet.dead-letters"), "queue": .string("quoted: with colon # not a comment")]),
            "retry": .object(["exchange_prefix": .string("r"), "tiers": .array([.string("1s"), .string("5s"), .string("2m")])]),
            "defaults": .object(["delivery_limit": .int(5)]),
            "topics": .array([.string("a.events"), .string("b.events")]),
            "queues": .array([
                .object(["name": .string("q1")]),
                .object(["name": .string("q2"), "retries": .bool(false), "subscriptions": .array([
                    .object(["topic": .string("a.events"), "filter": .array([.string("a.#"), .string("a.Thing.*")])]),
                ])]),
            ]),
            "list_at_key_indent": .array([.string("x"), .string("y")]),
            "empty": .null,
        ])
        #expect(value == expected)
    }

    @Test func reportsWhatItCannotReadWithTheLine() {
        func failure(_ yaml: String) -> String {
            do { _ = try YAMLSubset.parse(yaml); return "no error" } catch { return "\(error)" }
        }
        #expect(failure("a: 1\na: 2") == "line 2: 'a' appears twice")
        #expect(failure("a: [1, 2") == "line 1: missing ']'")
        #expect(failure("a: 1\n    b: 2") == "line 2: unexpected indentation")
        #expect(failure("just text") == "line 1: expected 'key: value', found 'just text'")
        #expect(failure("a: |\n  text").contains("no error") == false)
    }
}
