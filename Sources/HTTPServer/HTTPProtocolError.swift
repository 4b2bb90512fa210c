/// A way a client broke HTTP/1.1; each kind answers with one status and closes the connection.
public enum HTTPProtocolError: Error, Sendable, Hashable, CaseIterable {
    /// The request line is longer than the limit (414).
    case requestLineTooLong
    /// The header section, or a chunked body's trailer section, is larger than the limit (431).
    case headerSectionTooLarge
    /// The header section, or a chunked body's trailer section, has more fields than the limit (431).
    case tooManyHeaderFields
    /// The body is larger than the limit, by Content-Length or while decoding chunks (413).
    case bodyTooLarge
    /// The header section was not complete in time (408).
    case headerTimeout
    /// The body was not complete within the body timeout, or stopped arriving for longer than the idle timeout (408).
    case bodyTimeout
    /// The request line does not follow `method SP target SP version` (400).
    case malformedRequestLine
    /// The method is not a token (400).
    case invalidMethod
    /// The request target is not origin-, absolute- or asterisk-form, has a bad percent escape, or an absolute-form
    /// authority that is not a host and port (userinfo, say) (400).
    case invalidTarget
    /// The version is well formed but not HTTP/1.0 or HTTP/1.1 (505).
    case unsupportedVersion
    /// A line ends in a bare CR or LF instead of CRLF (400).
    case invalidLineEnding
    /// A field name is empty or not a token (400).
    case invalidHeaderName
    /// A field name is followed by whitespace before the colon (400).
    case whitespaceBeforeColon
    /// A field line starts with whitespace: obsolete line folding (400).
    case obsoleteLineFolding
    /// A field value holds NUL, CR, LF or another control character (400).
    case invalidHeaderValue
    /// An HTTP/1.1 request has no Host, or any request has more than one (400).
    case invalidHost
    /// Content-Length is not a non-negative decimal number (400).
    case invalidContentLength
    /// Several Content-Length values differ (400).
    case conflictingContentLength
    /// Content-Length and Transfer-Encoding are both present (400).
    case contentLengthWithTransferEncoding
    /// Transfer-Encoding is malformed, does not end in chunked, repeats it, gives chunked parameters, or comes with
    /// HTTP/1.0 (400).
    case invalidTransferEncoding
    /// Transfer-Encoding names a coding other than chunked before a final chunked (501).
    case unsupportedTransferEncoding
    /// A chunk size line (its extensions included), chunk terminator or trailer section is malformed (400).
    case malformedChunk
    /// Expect has a value other than 100-continue (417).
    case unsupportedExpectation
    /// The TLS handshake failed, e.g. a plain-HTTP request or no acceptable protocol version; a
    /// plain-HTTP request is answered 400 in plain text, anything else is just closed.
    case tlsHandshakeFailed
    /// The TLS handshake was not complete in time; the connection is closed without an answer (408).
    case tlsHandshakeTimeout

    /// The status the server answers with.
    public var status: Int {
        switch self {
        case .requestLineTooLong: 414
        case .headerSectionTooLarge, .tooManyHeaderFields: 431
        case .bodyTooLarge: 413
        case .headerTimeout, .bodyTimeout, .tlsHandshakeTimeout: 408
        case .unsupportedVersion: 505
        case .unsupportedTransferEncoding: 501
        case .unsupportedExpectation: 417
        case .malformedRequestLine, .invalidMethod, .invalidTarget, .invalidLineEnding, .invalidHeaderName,
            .whitespaceBeforeColon, .obsoleteLineFolding, .invalidHeaderValue, .invalidHost,
            .invalidContentLength, .conflictingContentLength, .contentLengthWithTransferEncoding,
            .invalidTransferEncoding, .malformedChunk, .tlsHandshakeFailed:
            400
        }
    }

    /// A short explanation for the plain-text body of the error response.
    public var reason: String {
        switch self {
        case .requestLineTooLong: "request line too long"
        case .headerSectionTooLarge: "header section too large"
        case .tooManyHeaderFields: "too many header fields"
        case .bodyTooLarge: "request body too large"
        case .headerTimeout: "header section not received in time"
        case .bodyTimeout: "request body not received in time"
        case .malformedRequestLine: "malformed request line"
        case .invalidMethod: "method is not a token"
        case .invalidTarget: "invalid request target"
        case .unsupportedVersion: "HTTP version not supported"
        case .invalidLineEnding: "lines must end with CRLF"
        case .invalidHeaderName: "invalid header field name"
        case .whitespaceBeforeColon: "whitespace between field name and colon"
        case .obsoleteLineFolding: "obsolete line folding"
        case .invalidHeaderValue: "invalid character in header field value"
        case .invalidHost: "missing or repeated Host"
        case .invalidContentLength: "invalid Content-Length"
        case .conflictingContentLength: "conflicting Content-Length values"
        case .contentLengthWithTransferEncoding: "Content-Length together with Transfer-Encoding"
        case .invalidTransferEncoding: "invalid Transfer-Encoding"
        case .unsupportedTransferEncoding: "transfer coding not implemented"
        case .malformedChunk: "malformed chunked body"
        case .unsupportedExpectation: "expectation not supported"
        case .tlsHandshakeFailed: "TLS handshake failed"
        case .tlsHandshakeTimeout: "TLS handshake not completed in time"
        }
    }
}
