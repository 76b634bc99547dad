import FoundationEssentials
public import Hummingbird
import HTTPTypes
import Logging
import NIOCore

/// An error answer as `application/problem+json` (RFC 9457): a stable `type`, a `title` for a
/// person, and `detail` saying exactly what was wrong.
public struct Problem: Error, CustomStringConvertible, Sendable {
    public var status: HTTPResponse.Status
    /// Short and stable: the last part of `type` (`validation`, `not-found`, `rate-limited`).
    public var kind: String
    public var title: String
    public var detail: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ kind: String, _ title: String, _ detail: String) {
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
    }

    public var description: String { "\(status.code) \(kind): \(detail)" }

    static func invalid(_ detail: String) -> Problem { Problem(.unprocessableContent, "validation", "The request is not valid", detail) }
    static func badRequest(_ detail: String) -> Problem { Problem(.badRequest, "malformed", "The request could not be read", detail) }
    static func notFound(_ detail: String) -> Problem { Problem(.notFound, "not-found", "Not found", detail) }
    static func unauthorized(_ detail: String) -> Problem {
        var problem = Problem(.unauthorized, "unauthorized", "Authentication is required", detail)
        problem.headers[.wwwAuthenticate] = "Bearer"
        return problem
    }
    static func forbidden(_ detail: String) -> Problem { Problem(.forbidden, "forbidden", "Not allowed", detail) }
    static func conflict(_ detail: String) -> Problem { Problem(.conflict, "conflict", "The request conflicts with the current state", detail) }
    static func unavailable(_ detail: String) -> Problem {
        var problem = Problem(.serviceUnavailable, "unavailable", "A service the request needs is unavailable", detail)
        problem.headers[.retryAfter] = "5"
        return problem
    }
    static func timeout(_ detail: String) -> Problem { Problem(.gatewayTimeout, "timeout", "A service did not answer in time", detail) }

    struct Body: Encodable {
        var type: String
        var title: String
        var status: Int
        var detail: String
        var requestId: String
    }

    func response(requestID: String) -> Response {
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        headers[EdgeHeaders.requestID] = requestID
        let body = Body(type: "https://shopfleet.dev/problems/\(kind)", title: title, status: Int(status.code), detail: detail, requestId: requestID)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(body)) ?? Data()
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

enum EdgeHeaders {
    static let requestID = HTTPField.Name("X-Request-ID")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let cartID = HTTPField.Name("X-Cart-ID")!
}

/// Every error becomes problem+json, and every answer carries the request id.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = EdgeContext

    func handle(_ request: Request, context: EdgeContext, next: (Request, EdgeContext) async throws -> Response) async throws -> Response {
        do {
            var response = try await next(request, context)
            response.headers[EdgeHeaders.requestID] = context.requestID
            return response
        } catch let problem as Problem {
            if problem.status.code >= 500 {
                context.logger.warning("request failed", metadata: ["status": .stringConvertible(problem.status.code), "detail": .string(problem.detail)])
            }
            return problem.response(requestID: context.requestID)
        } catch is NIOTooManyBytesError {
            return Problem(.contentTooLarge, "too-large", "The request body is too large",
                           "the body is larger than \(EdgeContext.maximumBody) bytes").response(requestID: context.requestID)
        } catch let error as HTTPError {
            let problem: Problem = switch error.status {
            case .notFound: .notFound("no route for \(request.method) \(request.uri.path)")
            case .methodNotAllowed: Problem(.methodNotAllowed, "method-not-allowed", "Method not allowed", "\(request.method) is not allowed on \(request.uri.path)")
            default: Problem(error.status, "http", error.status.reasonPhrase, error.body ?? error.status.reasonPhrase)
            }
            return problem.response(requestID: context.requestID)
        } catch {
            context.logger.error("unexpected error", metadata: ["error": .string("\(error)")])
            return Problem(.internalServerError, "internal", "Something went wrong on our side",
                           "the error was logged with request id \(context.requestID)").response(requestID: context.requestID)
        }
    }
}
