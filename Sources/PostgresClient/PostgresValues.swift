public import FoundationEssentials

/// A Swift value sent as a query parameter, in PostgreSQL's text format (the server parses it as
/// the parameter's type). `nil` text is SQL NULL.
public protocol PostgresEncodable: Sendable {
    var postgresText: String? { get }
}

/// A Swift value read from a column in PostgreSQL's text format.
public protocol PostgresDecodable: Sendable {
    /// Throws ``PostgresDecodingFailure`` naming what was wrong with `text`.
    static func decode(postgresText text: String) throws -> Self
}

public struct PostgresDecodingFailure: Error, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public var postgresText: String? { self?.postgresText }
}

extension String: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { self }
    public static func decode(postgresText text: String) throws -> String { text }
}

extension Substring: PostgresEncodable {
    public var postgresText: String? { String(self) }
}

extension Bool: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { self ? "t" : "f" }
    public static func decode(postgresText text: String) throws -> Bool {
        switch text {
        case "t", "true": return true
        case "f", "false": return false
        default: throw PostgresDecodingFailure("'\(text)' is not a boolean")
        }
    }
}

extension FixedWidthInteger where Self: PostgresEncodable {
    public var postgresText: String? { String(self) }
}

extension FixedWidthInteger where Self: PostgresDecodable {
    public static func decode(postgresText text: String) throws -> Self {
        guard let value = Self(text) else {
            throw PostgresDecodingFailure("'\(text.prefix(40))' is not a \(Self.self)")
        }
        return value
    }
}

extension Int: PostgresEncodable, PostgresDecodable {}
extension Int64: PostgresEncodable, PostgresDecodable {}
extension Int32: PostgresEncodable, PostgresDecodable {}
extension Int16: PostgresEncodable, PostgresDecodable {}

extension Double: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self > 0 ? "Infinity" : "-Infinity" }
        return String(self)
    }
    public static func decode(postgresText text: String) throws -> Double {
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default:
            guard let value = Double(text) else { throw PostgresDecodingFailure("'\(text)' is not a number") }
            return value
        }
    }
}

extension UUID: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { uuidString.lowercased() }
    public static func decode(postgresText text: String) throws -> UUID {
        guard let value = UUID(uuidString: text) else { throw PostgresDecodingFailure("'\(text)' is not a UUID") }
        return value
    }
}

/// `numeric` as `Decimal`: exact, unlike `Double`. Money is kept in minor units (bigint) anyway.
extension Decimal: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { description }
    public static func decode(postgresText text: String) throws -> Decimal {
        guard let value = Decimal(string: text) else { throw PostgresDecodingFailure("'\(text)' is not a numeric") }
        return value
    }
}

/// `bytea` as `Data`, in PostgreSQL's hex format (`\x0a1b…`).
extension Data: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        out.reserveCapacity(2 + count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(postgresText text: String) throws -> Data {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw PostgresDecodingFailure("bytea is not in hex format")
        }
        var out = Data(capacity: (utf8.count - 2) / 2)
        var i = 2
        while i < utf8.count {
            guard let hi = hexNibble(utf8[i]), let lo = hexNibble(utf8[i + 1]) else {
                throw PostgresDecodingFailure("bytea has a non-hex digit")
            }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

private func hexNibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: return c - 48
    case 97...102: return c - 87
    case 65...70: return c - 55
    default: return nil
    }
}

/// `timestamptz` as `Date`. Connections run with `TimeZone=UTC` and `DateStyle=ISO`, so the server
/// writes `2026-11-24 19:53:19.123456+00`; offsets other than UTC are read as well.
extension Date: PostgresEncodable, PostgresDecodable {
    public var postgresText: String? { PostgresTimestamp.format(self) }
    public static func decode(postgresText text: String) throws -> Date {
        guard let date = PostgresTimestamp.parse(text) else {
            throw PostgresDecodingFailure("'\(text)' is not a timestamp with time zone")
        }
        return date
    }
}

/// A JSON value for `json`/`jsonb` columns and parameters.
public struct PostgresJSON<Value: Codable & Sendable>: PostgresEncodable, PostgresDecodable {
    public var value: Value
    public init(_ value: Value) { self.value = value }

    public var postgresText: String? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(value) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    public static func decode(postgresText text: String) throws -> PostgresJSON<Value> {
        do {
            return PostgresJSON(try JSONDecoder().decode(Value.self, from: Data(text.utf8)))
        } catch {
            throw PostgresDecodingFailure("JSON does not decode as \(Value.self): \(error)")
        }
    }
}

/// One-dimensional arrays (`text[]`, `bigint[]`, `uuid[]` …) in PostgreSQL's array literal format.
extension Array: PostgresEncodable where Element: PostgresEncodable {
    public var postgresText: String? {
        var out = "{"
        for (i, element) in enumerated() {
            if i > 0 { out += "," }
            guard let text = element.postgresText else { out += "NULL"; continue }
            out += "\""
            for ch in text.unicodeScalars {
                if ch == "\"" || ch == "\\" { out += "\\" }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        return out + "}"
    }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public static func decode(postgresText text: String) throws -> [Element] {
        try PostgresArrayLiteral.split(text).map { item in
            guard let item else { throw PostgresDecodingFailure("array holds NULL; decode as [\(Element.self)?]") }
            return try Element.decode(postgresText: item)
        }
    }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public static func decode(postgresText text: String) throws -> Wrapped? {
        try Wrapped.decode(postgresText: text)
    }
}

enum PostgresArrayLiteral {
    /// Splits a one-dimensional array literal into its elements; `nil` for an unquoted NULL.
    static func split(_ text: String) throws -> [String?] {
        var scalars = Substring(text).unicodeScalars[...]
        // An explicit lower bound prefix such as "[0:2]={…}" is skipped.
        if scalars.first == "[", let eq = scalars.firstIndex(of: "=") {
            scalars = scalars[scalars.index(after: eq)...]
        }
        guard scalars.first == "{", scalars.last == "}" else {
            throw PostgresDecodingFailure("'\(text.prefix(40))' is not an array")
        }
        scalars = scalars.dropFirst().dropLast()
        var result: [String?] = []
        if scalars.isEmpty { return result }
        var current = String.UnicodeScalarView()
        var quoted = false, wasQuoted = false, escaped = false
        for ch in scalars {
            if escaped { current.append(ch); escaped = false; continue }
            if quoted {
                if ch == "\\" { escaped = true } else if ch == "\"" { quoted = false } else { current.append(ch) }
                continue
            }
            switch ch {
            case "\"": quoted = true; wasQuoted = true
            case "{": throw PostgresDecodingFailure("multi-dimensional arrays are not supported")
            case ",":
                let s = String(current)
                result.append(!wasQuoted && s == "NULL" ? nil : s)
                current = String.UnicodeScalarView(); wasQuoted = false
            default: current.append(ch)
            }
        }
        let s = String(current)
        result.append(!wasQuoted && s == "NULL" ? nil : s)
        return result
    }
}

/// timestamptz text without Foundation's formatters (days-from-civil arithmetic).
enum PostgresTimestamp {
    static func format(_ date: Date) -> String {
        let total = date.timeIntervalSince1970
        var seconds = Int64(total.rounded(.down))
        var micros = Int64(((total - Double(seconds)) * 1_000_000).rounded())
        if micros >= 1_000_000 { seconds += 1; micros -= 1_000_000 }
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (y, m, d) = civil(fromDays: days)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2)) \(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(micros, 6))+00"
    }

    static func parse(_ text: String) -> Date? {
        if text == "infinity" { return .distantFuture }
        if text == "-infinity" { return .distantPast }
        let u = Array(text.utf8)
        var i = 0
        func number(_ width: Int) -> Int64? {
            guard i + width <= u.count else { return nil }
            var v: Int64 = 0
            for k in i..<(i + width) {
                guard u[k] >= 48, u[k] <= 57 else { return nil }
                v = v * 10 + Int64(u[k] - 48)
            }
            i += width
            return v
        }
        func expect(_ c: Character) -> Bool {
            guard i < u.count, u[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        // Years may have more than 4 digits.
        var yearWidth = 0
        while i + yearWidth < u.count, u[i + yearWidth] >= 48, u[i + yearWidth] <= 57 { yearWidth += 1 }
        guard yearWidth >= 4, let year = number(yearWidth), expect("-"), let month = number(2), expect("-"),
              let day = number(2), expect(" ") || expect("T"), let hour = number(2), expect(":"),
              let minute = number(2), expect(":"), let second = number(2) else { return nil }
        var fraction = 0.0
        if i < u.count, u[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                fraction += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offset: Int64 = 0
        if i < u.count, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") {
            let sign: Int64 = u[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let oh = number(2) else { return nil }
            var om: Int64 = 0, os: Int64 = 0
            if expect(":") { guard let v = number(2) else { return nil }; om = v }
            if expect(":") { guard let v = number(2) else { return nil }; os = v }
            offset = sign * (oh * 3600 + om * 60 + os)
        } else if i < u.count, u[i] == UInt8(ascii: "Z") {
            i += 1
        }
        guard i == u.count else { return nil }
        let days = daysFromCivil(year, month, day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    // Howard Hinnant's civil calendar algorithms.
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
