import Auth
public import Hummingbird
import Logging
import NIOCore

/// What the edge knows about one request: its id, who sent it, and (once checked) who is signed in.
public struct EdgeContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID: String
    /// The client's address, the rate limit's key when nobody is signed in.
    public var client: String
    var claims: AccessTokens.Claims?
    /// Why the request's access token was refused; the request is refused once the rate limit counted it.
    var tokenProblem: String?

    static let maximumBody = 64 * 1024
    public var maxUploadSize: Int { Self.maximumBody }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        requestID = UUIDString.make()
        client = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }
}

enum UUIDString {
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef")
        return String((0..<32).map { _ in hex[Int(UInt8.random(in: 0...15, using: &generator))] })
    }
}
