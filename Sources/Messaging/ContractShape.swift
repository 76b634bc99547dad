public import FoundationEssentials

/// A message type with an example value, so its JSON shape can be recorded and checked.
/// The example must fill every optional field: a field that is nil is not in the JSON.
public protocol Contract: Message {
    static var example: Self { get }
}

/// The JSON shape of a contract: each field's JSON type and whether a decoder needs it.
/// `required` is found by removing the field from the example's JSON and decoding again.
public indirect enum JSONShape: Codable, Sendable, Equatable, CustomStringConvertible {
    case string, integer, number, boolean, null
    case array(JSONShape?)
    case object([String: Field])

    public struct Field: Codable, Sendable, Equatable {
        public var shape: JSONShape
        public var required: Bool
    }

    public var description: String {
        switch self {
        case .string: return "string"
        case .integer: return "integer"
        case .number: return "number"
        case .boolean: return "boolean"
        case .null: return "null"
        case .array(let element): return "array of \(element?.description ?? "anything")"
        case .object: return "object"
        }
    }

    /// The shape of contract `C`, from its example.
    public static func of<C: Contract>(_ type: C.Type) throws -> JSONShape {
        let data = try MessageCodec.encode(C.example)
        let value = try JSONDecoder().decode(JSONValue.self, from: data)
        func stillDecodes(_ value: JSONValue) -> Bool {
            guard let data = try? JSONEncoder().encode(value) else { return false }
            return (try? MessageCodec.decode(C.self, from: Array(data), typeName: C.type)) != nil
        }
        return shape(of: value, root: value, path: [], stillDecodes: stillDecodes)
    }

    private static func shape(of value: JSONValue, root: JSONValue, path: [String],
                              stillDecodes: (JSONValue) -> Bool) -> JSONShape {
        switch value {
        case .string: return .string
        case .int: return .integer
        case .double: return .number
        case .bool: return .boolean
        case .null: return .null
        case .array(let items):
            return .array(items.first.map { shape(of: $0, root: root, path: path + ["[]"], stillDecodes: stillDecodes) })
        case .object(let fields):
            var out: [String: Field] = [:]
            for (key, field) in fields {
                let without = removing(path + [key], from: root)
                out[key] = Field(shape: shape(of: field, root: root, path: path + [key], stillDecodes: stillDecodes),
                                 required: !stillDecodes(without))
            }
            return .object(out)
        }
    }

    /// `root` without the field at `path` (`[]` steps into every element of an array).
    private static func removing(_ path: [String], from root: JSONValue) -> JSONValue {
        guard let first = path.first else { return root }
        switch root {
        case .object(var fields):
            if path.count == 1 { fields[first] = nil; return .object(fields) }
            if let child = fields[first] { fields[first] = removing(Array(path.dropFirst()), from: child) }
            return .object(fields)
        case .array(let items) where first == "[]":
            return .array(items.map { removing(Array(path.dropFirst()), from: $0) })
        default:
            return root
        }
    }

    /// What makes `new` unable to read messages written with `old`, or old readers unable to read
    /// new messages: removed fields, changed types, fields that became required.
    public static func breakingChanges(from old: JSONShape, to new: JSONShape, at path: String = "") -> [String] {
        switch (old, new) {
        case let (.object(a), .object(b)):
            var out: [String] = []
            for key in Set(a.keys).union(b.keys).sorted() {
                let name = path.isEmpty ? key : "\(path).\(key)"
                switch (a[key], b[key]) {
                case let (x?, y?):
                    if !x.required && y.required { out.append("\(name) became required") }
                    out += breakingChanges(from: x.shape, to: y.shape, at: name)
                case let (x?, nil):
                    if x.required { out.append("\(name) was removed") } else { out.append("optional \(name) was removed") }
                case let (nil, y?):
                    if y.required { out.append("\(name) was added as a required field") }
                default: break
                }
            }
            return out
        case let (.array(x), .array(y)):
            if let x, let y { return breakingChanges(from: x, to: y, at: path + "[]") }
            return []
        default:
            return old == new ? [] : ["\(path.isEmpty ? "the body" : path) changed from \(old) to \(new)"]
        }
    }
}

/// The checked-in record of every contract's shape (`contracts/snapshot.json`), and the check that
/// a change is compatible.
public struct ContractSnapshot: Codable, Sendable, Equatable {
    public var contracts: [String: JSONShape]

    public init(_ types: [any Contract.Type]) throws {
        var contracts: [String: JSONShape] = [:]
        for type in types {
            func shape<C: Contract>(_ type: C.Type) throws -> JSONShape { try JSONShape.of(type) }
            guard contracts[type.type] == nil else { throw MessagingError("two contracts named \(type.type)") }
            contracts[type.type] = try shape(type)
        }
        self.contracts = contracts
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    public static func decode(_ data: Data) throws -> ContractSnapshot {
        try JSONDecoder().decode(ContractSnapshot.self, from: data)
    }

    /// Problems with `current` against this (checked-in) snapshot: breaking changes, each
    /// telling to publish a new version instead, and compatible changes not yet recorded.
    public func problems(with current: ContractSnapshot) -> [String] {
        var out: [String] = []
        for type in Set(contracts.keys).union(current.contracts.keys).sorted() {
            switch (contracts[type], current.contracts[type]) {
            case let (old?, new?):
                let breaking = JSONShape.breakingChanges(from: old, to: new)
                if !breaking.isEmpty {
                    out.append("\(type): incompatible change (\(breaking.joined(separator: "; "))); keep \(type) as it was and add a new version instead")
                } else if old != new {
                    out.append("\(type): compatible change not recorded; run `shopfleet contracts snapshot`")
                }
            case (_?, nil):
                out.append("\(type) was removed; messages of this type in flight or replayed from dead letters would find no handler. Keep it until none remain, then run `shopfleet contracts snapshot`")
            case (nil, _?):
                out.append("\(type) is new; run `shopfleet contracts snapshot`")
            default: break
            }
        }
        return out
    }
}
