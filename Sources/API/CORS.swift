import HTTPServer

/// Which browser origins may read the API from their pages (the Fetch standard's CORS protocol).
public struct CORSPolicy: Sendable, Equatable {
    /// The allowed origins as browsers serialise them in `Origin`; empty when every origin is allowed.
    public let origins: [String]
    /// `*` was given: every origin may read, and no response depends on `Origin`.
    public let allowsEveryOrigin: Bool

    /// Why a configured value is not an origin.
    public struct InvalidOrigin: Error, Equatable, CustomStringConvertible {
        /// The value as given.
        public let value: String
        /// What is wrong with it.
        public let reason: String

        public var description: String { "'\(value)' is not an origin (scheme://host[:port]): \(reason)" }
    }

    /// A policy allowing `values`: `*`, or origins `scheme://host[:port]`; the first value that is neither is thrown.
    public init(allowing values: [String]) throws(InvalidOrigin) {
        var origins: [String] = []
        var allowsEveryOrigin = false
        for value in values {
            if value == "*" {
                allowsEveryOrigin = true
                continue
            }
            let origin = try Self.serialisedOrigin(value)
            if !origins.contains(origin) { origins.append(origin) }
        }
        self.allowsEveryOrigin = allowsEveryOrigin
        self.origins = allowsEveryOrigin ? [] : origins
    }

    /// The headers a dashboard script may read besides the CORS-safelisted ones.
    static let exposedHeaders = "ETag, Location, Retry-After, X-Request-ID"
    /// The request headers the API reads, which a script may therefore send.
    static let allowedHeaders = (["Content-Type", "If-None-Match", "X-Request-ID"] + SignatureVerifier.headerNames)
        .joined(separator: ", ")
    /// Seconds a browser may cache a preflight answer; Chromium caps it here (Firefox at a day).
    static let maxAgeSeconds = "7200"

    /// Adds the CORS fields to `response`, the answer to `request`; `methods` are the route's methods when the route
    /// matched. A preflight (OPTIONS with `Access-Control-Request-Method`) that `response` answered 204 becomes the
    /// CORS preflight answer; without an allowed `Origin` only `Vary` is added.
    func apply(to response: inout HTTPResponse, request: HTTPRequest, methods: [String]?) {
        let origin = request.headers["Origin"]
        if !allowsEveryOrigin {
            // Fetch §3.2.5: the answer depends on Origin, so every response says so, also one to a request without
            // it, lest a cache hand a response without Access-Control-Allow-Origin to a page that needs it.
            response.headers.add("Vary", "Origin")
        }
        let allowedOrigin: String
        if allowsEveryOrigin {
            allowedOrigin = "*"
        } else if let origin, origins.contains(origin) {
            allowedOrigin = origin
        } else {
            return
        }
        response.headers.add("Access-Control-Allow-Origin", allowedOrigin)
        if request.method == "OPTIONS", origin != nil, request.headers["Access-Control-Request-Method"] != nil,
            response.status == 204, let methods, !methods.isEmpty
        {
            response.headers.add("Access-Control-Allow-Methods", methods.joined(separator: ", "))
            response.headers.add("Access-Control-Allow-Headers", Self.allowedHeaders)
            response.headers.add("Access-Control-Max-Age", Self.maxAgeSeconds)
        } else {
            response.headers.add("Access-Control-Expose-Headers", Self.exposedHeaders)
        }
    }

    /// `text` as a browser serialises the origin it names (RFC 6454 §6.1): scheme and host in lower case, the
    /// scheme's default port left out.
    static func serialisedOrigin(_ text: String) throws(InvalidOrigin) -> String {
        func invalid(_ reason: String) -> InvalidOrigin { InvalidOrigin(value: text, reason: reason) }
        guard !text.isEmpty else { throw invalid("empty") }
        guard let separator = text.range(of: "://") else { throw invalid("no scheme://") }
        let scheme = text[..<separator.lowerBound].lowercased()
        let authority = text[separator.upperBound...]
        // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
        guard let first = scheme.utf8.first, Self.isLetter(first),
            scheme.utf8.allSatisfy({ Self.isLetter($0) || Self.isDigit($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
        else { throw invalid("the scheme is not a URI scheme") }
        if let extra = authority.firstIndex(where: { "/?#".contains($0) }) {
            throw invalid(authority[extra] == "/" ? "it has a path (an origin has none, not even /)" : "it has a query or fragment")
        }
        guard !authority.contains("@") else { throw invalid("it has user information") }
        var host = Substring(authority)
        var port: Substring?
        if host.hasPrefix("[") {
            // RFC 3986 §3.2.2: an IPv6 literal in brackets.
            guard let close = host.firstIndex(of: "]") else { throw invalid("an IPv6 address lacks its ]") }
            let literal = host[host.index(after: host.startIndex)..<close]
            guard !literal.isEmpty, literal.utf8.allSatisfy({ Self.isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") })
            else { throw invalid("the IPv6 address is malformed") }
            let after = host[host.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw invalid("text follows the IPv6 address") }
                port = after.dropFirst()
            }
            host = host[...close]
        } else if let colon = host.firstIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw invalid("no host") }
        guard host.hasPrefix("[") || host.utf8.allSatisfy({ Self.isLetter($0) || Self.isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") })
        else {
            // Browsers send an internationalised name in its ASCII (xn--) form, which is what can match.
            throw invalid("the host has characters other than letters, digits, - and . (give a non-ASCII name in its xn-- form)")
        }
        var origin = scheme + "://" + host.lowercased()
        if let port {
            guard !port.isEmpty, port.utf8.count <= 5, port.utf8.allSatisfy(Self.isDigit), let number = Int(port),
                (1...65535).contains(number)
            else { throw invalid("the port is not 1...65535") }
            let isDefault = (scheme == "http" && number == 80) || (scheme == "https" && number == 443)
            if !isDefault { origin += ":\(number)" }
        }
        return origin
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") }
    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
    private static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || ((byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "f"))
    }
}
