import AsyncHTTPClient
import Edge
import FoundationEssentials
import NIOCore
import NIOHTTP1
import ShopfleetTesting
import Testing

/// How the edge serves the storefront and the console: hashed asset names that change with the
/// content (their own and what they import), references rewritten, a page that names a missing
/// asset or modules that import each other refused at start with the file named.
struct WebAssetsTests {
    /// A web root in /tmp with `files` (path → text).
    func root(_ files: [String: String]) throws -> String {
        let root = "/tmp/\(TestServers.uniqueName("web"))"
        for (path, text) in files {
            let full = "\(root)/\(path)"
            try FileManager.default.createDirectory(atPath: String(full[..<full.lastIndex(of: "/")!]), withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: full, contents: Data(text.utf8)))
        }
        return root
    }

    static let pages = [
        "storefront/index.html": #"<script type="module" src="/assets/store/app.js"></script><link rel="stylesheet" href="/assets/store/store.css">"#,
        "console/index.html": #"<script type="module" src="/assets/console/app.js"></script>"#,
    ]

    @Test func aChangeRenamesTheFileAndWhatImportsIt() throws {
        var files = Self.pages
        files["assets/store/app.js"] = "import { api } from './api.js';\nimport { esc } from '../common/text.js';\napi(esc);"
        files["assets/store/api.js"] = "export function api() {}"
        files["assets/store/store.css"] = "body { color: black; }"
        files["assets/common/text.js"] = "export const esc = 1;"
        files["assets/console/app.js"] = "import { esc } from \"../common/text.js\";"
        let first = try WebAssets.load(root: try root(files))
        let app = try #require(first.hashedNames["assets/store/app.js"])
        #expect(app.hasPrefix("/assets/store/app.") && app.hasSuffix(".js") && app.count == "/assets/store/app..js".count + 10)

        files["assets/common/text.js"] = "export const esc = 2;"
        let second = try WebAssets.load(root: try root(files))
        // The changed module, and every module importing it (directly or not), get new names.
        #expect(second.hashedNames["assets/common/text.js"] != first.hashedNames["assets/common/text.js"])
        #expect(second.hashedNames["assets/store/app.js"] != app)
        #expect(second.hashedNames["assets/console/app.js"] != first.hashedNames["assets/console/app.js"])
        // What does not depend on it keeps its name: a cache keeps it.
        #expect(second.hashedNames["assets/store/api.js"] == first.hashedNames["assets/store/api.js"])
        #expect(second.hashedNames["assets/store/store.css"] == first.hashedNames["assets/store/store.css"])
    }

    @Test func aMissingAssetOrAnImportCycleIsRefusedWithTheFileNamed() throws {
        var missing = Self.pages
        missing["assets/store/app.js"] = "import { x } from './gone.js';"
        missing["assets/store/store.css"] = ""
        missing["assets/console/app.js"] = ""
        let gone = #expect(throws: WebAssets.Failure.self) { try WebAssets.load(root: try root(missing)) }
        #expect(gone?.description.contains("assets/store/app.js imports './gone.js'") == true, "\(String(describing: gone))")

        var cycle = missing
        cycle["assets/store/app.js"] = "import { b } from './b.js';"
        cycle["assets/store/b.js"] = "import { a } from './app.js';"
        let looped = #expect(throws: WebAssets.Failure.self) { try WebAssets.load(root: try root(cycle)) }
        #expect(looped?.description.contains("cycle") == true, "\(String(describing: looped))")

        var page = Self.pages
        page["assets/store/app.js"] = ""
        page["assets/console/app.js"] = ""
        let unnamed = #expect(throws: WebAssets.Failure.self) { try WebAssets.load(root: try root(page)) }
        #expect(unnamed?.description.contains("storefront/index.html refers to /assets/store/store.css") == true, "\(String(describing: unnamed))")
    }

    /// Over HTTP, from the edge of a fleet: the page revalidated, the assets immutable under their
    /// hashed names, a 304 for a known ETag, and the content security policy on both.
    @Test func thePagesAreRevalidatedAndTheAssetsCachedForAYear() async throws {
        try await CheckoutFleet.with(environment: ["SHOPFLEET_WEB_ROOT": TestServers.repositoryRoot + "/web"]) { fleet in
            let base = "http://127.0.0.1:\(fleet.ports["edge"]!)"
            let page = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/"), timeout: .seconds(10))
            #expect(page.status == .ok)
            #expect(page.headers["Cache-Control"].first == "no-cache")
            #expect(page.headers["Content-Security-Policy"].first == WebAssets.contentSecurityPolicy)
            let html = String(buffer: try await page.body.collect(upTo: 1 << 20))
            let script = try #require(html.firstMatch(of: /src="(\/assets\/store\/app\.[0-9a-f]{10}\.js)"/)).1
            let etag = try #require(page.headers["ETag"].first)

            var again = HTTPClientRequest(url: base + "/")
            again.headers.add(name: "If-None-Match", value: etag)
            #expect(try await HTTPClient.shared.execute(again, timeout: .seconds(10)).status == .notModified)

            let asset = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + script), timeout: .seconds(10))
            #expect(asset.status == .ok)
            #expect(asset.headers["Cache-Control"].first == "public, max-age=31536000, immutable")
            #expect(asset.headers["Content-Type"].first == "text/javascript; charset=utf-8")
            let console = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/console"), timeout: .seconds(10))
            #expect(console.status == .ok)
            let unhashed = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/assets/store/app.js"), timeout: .seconds(10))
            #expect(unhashed.status == .notFound)
        }
    }
}
