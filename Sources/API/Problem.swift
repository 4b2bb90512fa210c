import Domain
import Foundation
import HTTPServer

/// An RFC 9457 problem: every error response of the API is one of these, as application/problem+json.
public struct Problem: Error, Sendable, Equatable {
    /// The HTTP status, repeated in the body.
    public let status: Int
    /// A short stable slug, rendered as the type URN `urn:stovepipe:problem:<slug>`.
    public let slug: String
    /// A human-readable summary of the problem type.
    public let title: String
    /// What went wrong with this request; never a stack trace, SQL or a secret.
    public let detail: String
    /// Extra response headers, e.g. `Allow` or `Retry-After`.
    public var headers: [(String, String)] = []

    /// Makes a problem.
    public init(status: Int, slug: String, title: String, detail: String, headers: [(String, String)] = []) {
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers
    }

    public static func == (lhs: Problem, rhs: Problem) -> Bool {
        lhs.status == rhs.status && lhs.slug == rhs.slug && lhs.detail == rhs.detail
    }

    /// The response that carries this problem.
    public func response() -> HTTPResponse {
        var json = JSONWriter()
        json.beginObject()
        json.knownKey("detail")
        json.string(detail)
        json.knownKey("status")
        json.integer(status)
        json.knownKey("title")
        json.string(title)
        json.knownKey("type")
        json.string(typeURN)
        json.endObject()
        var headers = HTTPHeaders([("Content-Type", "application/problem+json")])
        for (name, value) in self.headers { headers.add(name, value) }
        return HTTPResponse(status: status, headers: headers, body: json.bytes)
    }

    /// The RFC 9457 `type` member.
    var typeURN: String { "urn:stovepipe:problem:\(slug)" }

    static func badRequest(_ slug: String, _ detail: String) -> Problem {
        Problem(status: 400, slug: slug, title: "Bad request", detail: detail)
    }

    static func notFound(_ detail: String) -> Problem {
        Problem(status: 404, slug: "not-found", title: "Not found", detail: detail)
    }

    static func methodNotAllowed(_ allowed: [String]) -> Problem {
        Problem(status: 405, slug: "method-not-allowed", title: "Method not allowed",
            detail: "this resource supports \(allowed.joined(separator: ", "))",
            headers: [("Allow", allowed.joined(separator: ", "))])
    }

    static func notImplemented(_ method: String) -> Problem {
        Problem(status: 501, slug: "not-implemented", title: "Not implemented",
            detail: "the server does not recognise the method '\(echoed(method))'")
    }

    /// The most UTF-8 bytes of request text (a method, a topic name) that a detail repeats.
    static let echoLimit = 64

    /// `text` from the request as a detail repeats it: whole up to `echoLimit` bytes, else its first characters
    /// within them and `…`.
    static func echoed(_ text: String) -> String {
        // The request line bounds these only at --max-request-line-bytes, which an operator may raise without limit,
        // and a control character grows sixfold when escaped: a problem body names the input, it does not return it
        // (RFC 9457 §5: what a problem carries is to be scrutinized).
        guard text.utf8.count > echoLimit else { return text }
        var prefix = ""
        for character in text {
            guard prefix.utf8.count + character.utf8.count <= echoLimit else { break }
            prefix.append(character)
        }
        return prefix + "…"
    }

    static func unavailable(_ detail: String) -> Problem {
        Problem(status: 503, slug: "unavailable", title: "Service unavailable", detail: detail,
            headers: [("Retry-After", "1")])
    }

    static let internalError = Problem(status: 500, slug: "internal", title: "Internal server error",
        detail: "the server failed to answer; the error is logged")
}

// The single place where domain errors become HTTP statuses.
extension Problem {
    /// The problem for an ingest error.
    public init(_ error: IngestError) {
        switch error {
        case .invalidQueueName(let reason):
            self = .badRequest("invalid-queue-name", "invalid queue name: \(reason)")
        case .unknownQueue(let name):
            self = Problem(status: 404, slug: "unknown-queue", title: "Unknown queue",
                detail: "queue '\(name)' is not configured or its repository or ref does not exist")
        case .unavailable:
            self = .unavailable("a dependency (storage, topic or source control) is unavailable; retry later")
        }
    }

    /// The problem for a contract error met while reading.
    public init(_ error: BackendError, notFound: String) {
        switch error {
        case .notFound: self = .notFound(notFound)
        case .unavailable: self = .unavailable("storage is unavailable; retry later")
        case .alreadyExists, .versionMismatch:
            self = Problem(status: 409, slug: "conflict", title: "Conflict", detail: "the resource changed concurrently; retry")
        }
    }

    /// The problem for a malformed queue name or request id in a path.
    public init(_ error: ValidationError) {
        switch error {
        case .invalidQueueName: self = .badRequest("invalid-queue-name", error.description)
        case .invalidRequestID: self = .badRequest("invalid-request-id", error.description)
        }
    }
}
