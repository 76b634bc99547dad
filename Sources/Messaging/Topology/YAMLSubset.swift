/// The YAML the topology file uses, read into a ``JSONValue``: block mappings and sequences by
/// indentation, flow sequences `[a, b]` and mappings `{a: b}`, plain, single- and double-quoted
/// scalars, and `#` comments. Anchors, tags, multi-line scalars and documents are not supported
/// and are reported as errors rather than misread.
///
/// A parser of our own rather than a YAML library: the libraries on Linux pull in the whole of
/// Foundation with ICU, about 8 MB of memory in every worker, for one small file read at start.
enum YAMLSubset {
    struct Failure: Error, CustomStringConvertible {
        var line: Int
        var reason: String
        var description: String { "line \(line): \(reason)" }
    }

    private struct Line {
        var number: Int
        var indent: Int
        var text: Substring
    }

    static func parse(_ text: String) throws -> JSONValue {
        var lines: [Line] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = stripComment(raw)
            let trimmed = content.drop { $0 == " " }
            if trimmed.allSatisfy({ $0 == " " || $0 == "\r" }) { continue }
            if trimmed.hasPrefix("\t") { throw Failure(line: index + 1, reason: "tabs are not allowed for indentation") }
            if trimmed.hasPrefix("---") || trimmed.hasPrefix("&") || trimmed.hasPrefix("!") || trimmed.hasPrefix("|") || trimmed.hasPrefix(">") {
                throw Failure(line: index + 1, reason: "unsupported YAML: '\(trimmed.prefix(20))'")
            }
            var end = trimmed.endIndex
            while end > trimmed.startIndex, trimmed[trimmed.index(before: end)] == " " || trimmed[trimmed.index(before: end)] == "\r" {
                end = trimmed.index(before: end)
            }
            lines.append(Line(number: index + 1, indent: content.count - trimmed.count, text: trimmed[..<end]))
        }
        if lines.isEmpty { return .object([:]) }
        var position = 0
        let value = try block(lines, &position, indent: lines[0].indent)
        if position < lines.count {
            throw Failure(line: lines[position].number, reason: "unexpected indentation")
        }
        return value
    }

    /// A `#` starts a comment at the start of a line or after white space, outside quotes.
    private static func stripComment(_ line: Substring) -> Substring {
        var quote: Character?
        var previous: Character = " "
        for index in line.indices {
            let c = line[index]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "#" && (previous == " " || previous == "\t") {
                return line[..<index]
            }
            previous = c
        }
        return line
    }

    private static func block(_ lines: [Line], _ position: inout Int, indent: Int) throws -> JSONValue {
        let first = lines[position]
        if first.text == "-" || first.text.hasPrefix("- ") {
            var items: [JSONValue] = []
            while position < lines.count, lines[position].indent == indent,
                  lines[position].text == "-" || lines[position].text.hasPrefix("- ") {
                let line = lines[position]
                let rest = line.text.dropFirst(1).drop { $0 == " " }
                position += 1
                if rest.isEmpty {
                    guard position < lines.count, lines[position].indent > indent else { items.append(.null); continue }
                    items.append(try block(lines, &position, indent: lines[position].indent))
                } else if isMappingEntry(rest) {
                    // "- key: value" opens a mapping whose other keys sit under "key".
                    let itemIndent = indent + (line.text.count - rest.count)
                    var entryLines = [Line(number: line.number, indent: itemIndent, text: rest)]
                    while position < lines.count, lines[position].indent > indent {
                        entryLines.append(lines[position])
                        position += 1
                    }
                    var inner = 0
                    items.append(try block(entryLines, &inner, indent: itemIndent))
                    if inner < entryLines.count { throw Failure(line: entryLines[inner].number, reason: "unexpected indentation") }
                } else {
                    items.append(try scalarOrFlow(rest, line: line.number))
                }
            }
            return .array(items)
        }
        var fields: [String: JSONValue] = [:]
        while position < lines.count, lines[position].indent == indent {
            let line = lines[position]
            guard let (key, rest) = splitEntry(line.text) else {
                throw Failure(line: line.number, reason: "expected 'key: value', found '\(line.text.prefix(40))'")
            }
            guard fields[key] == nil else { throw Failure(line: line.number, reason: "'\(key)' appears twice") }
            position += 1
            if rest.isEmpty {
                if position < lines.count, lines[position].indent > indent {
                    fields[key] = try block(lines, &position, indent: lines[position].indent)
                } else if position < lines.count, lines[position].indent == indent, lines[position].text.hasPrefix("- ") {
                    // A sequence may sit at the same indentation as its key.
                    fields[key] = try block(lines, &position, indent: indent)
                } else {
                    fields[key] = .null
                }
            } else {
                fields[key] = try scalarOrFlow(rest, line: line.number)
            }
        }
        if position < lines.count, lines[position].indent > indent {
            throw Failure(line: lines[position].number, reason: "unexpected indentation")
        }
        return .object(fields)
    }

    private static func isMappingEntry(_ text: Substring) -> Bool {
        guard let first = text.first, first != "[", first != "{", first != "\"", first != "'" else { return false }
        return splitEntry(text) != nil
    }

    /// `key: value` (or `key:`), the key plain or quoted.
    private static func splitEntry(_ text: Substring) -> (String, Substring)? {
        var key: String
        var rest: Substring
        if let q = text.first, q == "\"" || q == "'" {
            guard let close = text.dropFirst().firstIndex(of: q) else { return nil }
            key = String(text[text.index(after: text.startIndex)..<close])
            rest = text[text.index(after: close)...]
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst()
        } else {
            var found: Substring.Index?
            var index = text.startIndex
            while index < text.endIndex {
                if text[index] == ":" {
                    let next = text.index(after: index)
                    if next == text.endIndex || text[next] == " " { found = index; break }
                }
                index = text.index(after: index)
            }
            guard let colon = found else { return nil }
            key = String(text[..<colon])
            rest = text[text.index(after: colon)...]
        }
        if key.isEmpty { return nil }
        return (key, rest.drop { $0 == " " })
    }

    private static func scalarOrFlow(_ text: Substring, line: Int) throws -> JSONValue {
        var index = text.startIndex
        let value = try flow(text, &index, line: line, inFlow: false)
        let trailing = text[index...].drop { $0 == " " }
        if !trailing.isEmpty { throw Failure(line: line, reason: "unexpected '\(trailing.prefix(20))'") }
        return value
    }

    private static func flow(_ text: Substring, _ index: inout Substring.Index, line: Int, inFlow: Bool) throws -> JSONValue {
        func skipSpaces() { while index < text.endIndex, text[index] == " " { index = text.index(after: index) } }
        skipSpaces()
        guard index < text.endIndex else { return .null }
        let c = text[index]
        if c == "[" || c == "{" {
            let close: Character = c == "[" ? "]" : "}"
            index = text.index(after: index)
            var items: [JSONValue] = []
            var fields: [String: JSONValue] = [:]
            skipSpaces()
            if index < text.endIndex, text[index] == close {
                index = text.index(after: index)
                return c == "[" ? .array([]) : .object([:])
            }
            while true {
                if c == "[" {
                    items.append(try flow(text, &index, line: line, inFlow: true))
                } else {
                    let keyValue = try flow(text, &index, line: line, inFlow: true)
                    guard case .string(let key) = keyValue else { throw Failure(line: line, reason: "a flow mapping key must be text") }
                    skipSpaces()
                    guard index < text.endIndex, text[index] == ":" else { throw Failure(line: line, reason: "expected ':' after '\(key)'") }
                    index = text.index(after: index)
                    fields[key] = try flow(text, &index, line: line, inFlow: true)
                }
                skipSpaces()
                guard index < text.endIndex else { throw Failure(line: line, reason: "missing '\(close)'") }
                if text[index] == "," { index = text.index(after: index); continue }
                if text[index] == close { index = text.index(after: index); break }
                throw Failure(line: line, reason: "expected ',' or '\(close)', found '\(text[index])'")
            }
            return c == "[" ? .array(items) : .object(fields)
        }
        if c == "\"" || c == "'" {
            var out = ""
            index = text.index(after: index)
            while index < text.endIndex, text[index] != c {
                if c == "\"", text[index] == "\\" {
                    index = text.index(after: index)
                    guard index < text.endIndex else { break }
                    switch text[index] {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    default: out.append(text[index])
                    }
                } else {
                    out.append(text[index])
                }
                index = text.index(after: index)
            }
            guard index < text.endIndex else { throw Failure(line: line, reason: "unterminated quoted text") }
            index = text.index(after: index)
            return .string(out)
        }
        let start = index
        while index < text.endIndex {
            let d = text[index]
            if inFlow && (d == "," || d == "]" || d == "}") { break }
            if inFlow && d == ":" {
                let next = text.index(after: index)
                if next == text.endIndex || text[next] == " " { break }
            }
            index = text.index(after: index)
        }
        let plain = String(text[start..<index]).trimmingSpaces()
        switch plain {
        case "null", "~", "": return .null
        case "true": return .bool(true)
        case "false": return .bool(false)
        default:
            if let n = Int(plain) { return .int(n) }
            return .string(plain)
        }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
