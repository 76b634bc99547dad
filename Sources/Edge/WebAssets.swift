import Contracts
import Crypto
public import FoundationEssentials
import Hummingbird
import HTTPTypes
import NIOCore

/// The storefront and the console: static files from a directory (`web/`), served the way a CDN
/// wants them. Loaded once at start:
///
/// - `storefront/index.html` is `/`, `console/index.html` is `/console`: revalidated on every use
///   (`Cache-Control: no-cache` and an `ETag`).
/// - `assets/<path>` is `/assets/<path with a content hash before the extension>`, cached for a
///   year and `immutable`: a changed file is a new name. References to assets in the HTML
///   (`src="/assets/…"`, `href="/assets/…"`) and the relative imports of JavaScript modules
///   (`from './api.js'`) are rewritten to the hashed names; a module's hash covers the hashed
///   names of what it imports, so a change anywhere renames everything that depends on it.
///
/// Every answer carries a content security policy that allows scripts, styles and connections
/// from the page's own origin only (no inline script, no `eval`).
public struct WebAssets: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    struct File: Sendable {
        var body: ByteBuffer
        var contentType: String
        var etag: String
        var immutable: Bool
    }

    public static let contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        + "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

    /// The pages and where they are served.
    static let pages = ["/": "storefront/index.html", "/console": "console/index.html"]

    /// By request path.
    let files: [String: File]
    /// `assets/store/app.js` → `/assets/store/app.0123456789.js`.
    public let hashedNames: [String: String]

    /// Loads `root`; an error names the file and what is wrong with it.
    public static func load(root: String) throws -> WebAssets {
        guard (try? FileManager.default.contentsOfDirectory(atPath: root)) != nil else {
            throw Failure(description: "the web root \(root) is not a directory (SHOPFLEET_WEB_ROOT)")
        }
        var sources: [String: [UInt8]] = [:]
        let assets = root + "/assets"
        // Every file under assets/, by its path there; hidden files and directories left out.
        func walk(_ relative: String) throws {
            let directory = relative.isEmpty ? assets : "\(assets)/\(relative)"
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
            for name in names.sorted() where !name.hasPrefix(".") {
                let path = relative.isEmpty ? name : "\(relative)/\(name)"
                if (try? FileManager.default.contentsOfDirectory(atPath: "\(assets)/\(path)")) != nil {
                    try walk(path)
                } else if let data = FileManager.default.contents(atPath: "\(assets)/\(path)") {
                    sources[path] = Array(data)
                } else {
                    throw Failure(description: "cannot read \(assets)/\(path)")
                }
            }
        }
        try walk("")

        var hashed: [String: String] = [:]      // asset path → hashed request path
        var contents: [String: [UInt8]] = [:]   // asset path → rewritten bytes
        var visiting: [String] = []
        func resolve(_ path: String) throws {
            if hashed[path] != nil { return }
            if let start = visiting.firstIndex(of: path) {
                throw Failure(description: "JavaScript modules import each other in a cycle: "
                              + (visiting[start...] + [path]).map { "assets/\($0)" }.joined(separator: " → "))
            }
            visiting.append(path)
            defer { visiting.removeLast() }
            var bytes = sources[path]!
            if path.hasSuffix(".js") {
                var text = String(decoding: bytes, as: UTF8.self)
                for specifier in Self.relativeImports(in: text) {
                    let target = Self.join(directory: Self.directory(of: path), specifier)
                    guard let target, sources[target] != nil else {
                        throw Failure(description: "assets/\(path) imports '\(specifier)', which is not a file under \(assets)")
                    }
                    try resolve(target)
                    let hashedTarget = String(hashed[target]!.dropFirst("/assets/".count))
                    let rewritten = Self.relative(from: Self.directory(of: path), to: hashedTarget)
                    text = text.replacing("'\(specifier)'", with: "'\(rewritten)'").replacing("\"\(specifier)\"", with: "\"\(rewritten)\"")
                }
                bytes = Array(text.utf8)
            }
            contents[path] = bytes
            hashed[path] = "/assets/" + Self.insertHash(Self.digest(bytes, length: 10), into: path)
        }
        for path in sources.keys.sorted() { try resolve(path) }

        var files: [String: File] = [:]
        for (path, bytes) in contents {
            files[hashed[path]!] = File(body: ByteBuffer(bytes: bytes), contentType: Self.contentType(path),
                                        etag: "\"\(Self.digest(bytes, length: 20))\"", immutable: true)
        }
        for (route, page) in pages {
            guard let data = FileManager.default.contents(atPath: "\(root)/\(page)") else {
                throw Failure(description: "cannot read \(root)/\(page), the page served at \(route)")
            }
            var text = String(decoding: data, as: UTF8.self)
            for reference in Self.assetReferences(in: text) {
                guard let target = hashed[reference] else {
                    throw Failure(description: "\(root)/\(page) refers to /assets/\(reference), which is not a file under \(assets)")
                }
                text = text.replacing("\"/assets/\(reference)\"", with: "\"\(target)\"")
            }
            let bytes = Array(text.utf8)
            files[route] = File(body: ByteBuffer(bytes: bytes), contentType: "text/html; charset=utf-8",
                                etag: "\"\(Self.digest(bytes, length: 20))\"", immutable: false)
        }
        return WebAssets(files: files, hashedNames: Dictionary(uniqueKeysWithValues: hashed.map { ("assets/\($0.key)", $0.value) }))
    }

    /// The answer for `path`, nil when there is no such file.
    func response(path: String, ifNoneMatch: String?) -> Response? {
        let key = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let file = files[key] else { return nil }
        var headers: HTTPFields = [
            .contentType: file.contentType,
            .eTag: file.etag,
            .cacheControl: file.immutable ? "public, max-age=31536000, immutable" : "no-cache",
            .contentSecurityPolicy: Self.contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
            .referrerPolicy: "no-referrer",
        ]
        if let ifNoneMatch, ifNoneMatch.split(separator: ",").contains(where: { $0.trimmingSpaces == file.etag || $0.trimmingSpaces == "*" }) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentLength] = String(file.body.readableBytes)
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: file.body))
    }

    // MARK: - Reading and naming

    /// The relative specifiers of a module's static imports and re-exports (`import … from './x.js'`,
    /// `import './x.js'`, `export … from '../y.js'`).
    static func relativeImports(in text: String) -> [String] {
        var found: [String] = []
        let pattern = /(?:\bfrom|\bimport)\s*['"](\.{1,2}\/[^'"\n]+)['"]/
        for match in text.matches(of: pattern) where !found.contains(String(match.1)) {
            found.append(String(match.1))
        }
        return found
    }

    /// The assets an HTML page names (`src="/assets/…"`, `href="/assets/…"`).
    static func assetReferences(in text: String) -> [String] {
        var found: [String] = []
        for match in text.matches(of: /\b(?:src|href)="\/assets\/([^"]+)"/) where !found.contains(String(match.1)) {
            found.append(String(match.1))
        }
        return found
    }

    static func directory(of path: String) -> [String] { Array(path.split(separator: "/").dropLast().map(String.init)) }

    /// `directory` + a relative specifier, as an asset path; nil when it leaves `assets/`.
    static func join(directory: [String], _ specifier: String) -> String? {
        var parts = directory
        for piece in specifier.split(separator: "/") {
            switch piece {
            case ".": continue
            case "..":
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            default: parts.append(String(piece))
            }
        }
        return parts.joined(separator: "/")
    }

    /// A relative specifier from `directory` to the asset `path`.
    static func relative(from directory: [String], to path: String) -> String {
        let target = path.split(separator: "/").map(String.init)
        var common = 0
        while common < directory.count, common < target.count - 1, directory[common] == target[common] { common += 1 }
        let up = directory.count - common
        let rest = target[common...].joined(separator: "/")
        return up == 0 ? "./" + rest : String(repeating: "../", count: up) + rest
    }

    /// `store/app.js` with hash `abc` → `store/app.abc.js`.
    static func insertHash(_ hash: String, into path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let prefix = path.dropLast(name.count)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "\(path).\(hash)" }
        return prefix + name[..<dot] + ".\(hash)" + name[dot...]
    }

    static func digest(_ bytes: [UInt8], length: Int) -> String {
        String(SHA256.hash(data: bytes).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
            .joined().prefix(length))
    }

    static func contentType(_ path: String) -> String {
        switch path.split(separator: ".").last.map({ $0.lowercased() }) {
        case "js", "mjs": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "html": "text/html; charset=utf-8"
        case "svg": "image/svg+xml"
        case "png": "image/png"
        case "ico": "image/x-icon"
        case "json": "application/json"
        case "webmanifest": "application/manifest+json"
        case "txt": "text/plain; charset=utf-8"
        default: "application/octet-stream"
        }
    }
}

extension HTTPField.Name {
    static let referrerPolicy = Self("Referrer-Policy")!
}
