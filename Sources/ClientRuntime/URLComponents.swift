/// The parts of a server URL (`scheme://user:password@host:port/path`), percent-decoded. Parsed by
/// hand so the clients need no Foundation and so every error can say which part is wrong.
public struct ServerURL: Sendable, Equatable {
    public var scheme: String
    public var user: String?
    public var password: String?
    public var host: String
    public var port: Int?
    /// The path without its leading slash, percent-decoded.
    public var path: String
    public var query: [(String, String)]

    public static func == (a: ServerURL, b: ServerURL) -> Bool {
        a.scheme == b.scheme && a.user == b.user && a.password == b.password && a.host == b.host
            && a.port == b.port && a.path == b.path
            && a.query.map { "\($0.0)=\($0.1)" } == b.query.map { "\($0.0)=\($0.1)" }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var reason: String
        /// The URL with any password replaced, safe to log.
        public var redactedURL: String
        public var description: String { "invalid URL \(redactedURL): \(reason)" }
    }

    public init(_ string: String, schemes: [String]) throws {
        let redacted = ServerURL.redact(string)
        func fail(_ reason: String) -> ParseError { ParseError(reason: reason, redactedURL: redacted) }
        guard let schemeEnd = string.firstRange(of: "://") else { throw fail("missing '://'") }
        scheme = String(string[..<schemeEnd.lowerBound]).lowercased()
        guard schemes.contains(scheme) else {
            throw fail("scheme must be \(schemes.map { "'\($0)'" }.joined(separator: " or "))")
        }
        var rest = Substring(string[schemeEnd.upperBound...])
        var queryPart: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            queryPart = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var authority = rest
        var pathPart: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            pathPart = rest[rest.index(after: slash)...]
        }
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try ServerURL.decode(userInfo[..<colon], fail)
                password = try ServerURL.decode(userInfo[userInfo.index(after: colon)...], fail)
            } else {
                user = try ServerURL.decode(userInfo, fail)
            }
            if user == "" { user = nil }
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw fail("unclosed '[' in host") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw fail("port is not a number from 1 to 65535") }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            let portText = authority[authority.index(after: colon)...]
            if !portText.isEmpty {
                guard let p = Int(portText), (1...65535).contains(p) else {
                    throw fail("port '\(portText)' is not a number from 1 to 65535")
                }
                port = p
            }
        } else {
            host = String(authority)
        }
        if host.isEmpty { host = "localhost" }
        path = try ServerURL.decode(pathPart, fail)
        query = try queryPart.split(separator: "&").map { item in
            let kv = item.split(separator: "=", maxSplits: 1)
            return (try ServerURL.decode(kv[0], fail), kv.count > 1 ? try ServerURL.decode(kv[1], fail) : "")
        }
    }

    public func queryValue(_ name: String) -> String? {
        query.first { $0.0 == name }?.1
    }

    /// Replaces the password in a URL string with `***`, for logs and errors.
    public static func redact(_ string: String) -> String {
        guard let schemeEnd = string.firstRange(of: "://") else { return string }
        let rest = string[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@"),
              let colon = authority[..<at].firstIndex(of: ":") else { return string }
        return String(string[..<colon]) + ":***" + String(string[at...])
    }

    private static func decode(_ s: Substring, _ fail: (String) -> ParseError) throws -> String {
        guard s.contains("%") else { return String(s) }
        var bytes: [UInt8] = []
        var i = s.utf8.startIndex
        let u = s.utf8
        while i < u.endIndex {
            let c = u[i]
            if c == UInt8(ascii: "%") {
                let h1 = u.index(after: i)
                guard h1 < u.endIndex, u.index(after: h1) < u.endIndex,
                      let hi = hexValue(u[h1]), let lo = hexValue(u[u.index(after: h1)]) else {
                    throw fail("bad percent-encoding")
                }
                bytes.append(hi << 4 | lo)
                i = u.index(h1, offsetBy: 2)
            } else {
                bytes.append(c)
                i = u.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
