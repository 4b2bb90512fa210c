import Testing

@testable import HTTPServer

// An adversarial checklist of request framing (RFC 9112, RFC 9110), after what llhttp, SwiftNIO's
// parser, rejects: each case is fed whole and one byte at a time, so where a line or chunk is cut
// never changes the verdict.

private let framingLimits = HTTPParserLimits(
    maxRequestLineBytes: 8 * 1024, maxHeaderBytes: 64 * 1024, maxHeaderFields: 100, maxBodyBytes: 1024 * 1024
)

private enum Framed: Equatable, CustomStringConvertible {
    case request(method: String, path: String, body: String)
    case sendContinue
    case failure(HTTPProtocolError)

    var description: String {
        switch self {
        case .request(let method, let path, let body): "request(\(method) \(path) body=\(body.debugDescription))"
        case .sendContinue: "sendContinue"
        case .failure(let error): "failure(\(error))"
        }
    }
}

/// Feeds `raw` in pieces of `step` bytes (all at once for nil), collecting events until a failure.
private func feed(
    _ raw: String, step: Int? = nil, limits: HTTPParserLimits = framingLimits
) -> (events: [Framed], requests: [ParsedRequest]) {
    feed(bytes: Array(raw.utf8), step: step, limits: limits)
}

private func feed(
    bytes all: [UInt8], step: Int? = nil, limits: HTTPParserLimits = framingLimits
) -> (events: [Framed], requests: [ParsedRequest]) {
    let size = max(1, step ?? all.count)
    let chunks = stride(from: 0, to: all.count, by: size).map { Array(all[$0..<min($0 + size, all.count)]) }
    let (outcomes, requests) = run(chunks, limits: limits)
    let events = outcomes.map { outcome -> Framed in
        switch outcome {
        case .request(let method, let path, _, let body, _): .request(method: method, path: path, body: body)
        case .sendContinue: .sendContinue
        case .failure(let error): .failure(error)
        }
    }
    return (events, requests)
}

struct FramingCase: CustomTestStringConvertible, Sendable {
    let name: String
    let raw: String
    let error: HTTPProtocolError
    var testDescription: String { name }
}

private let chunkedHead = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

private let rejected: [FramingCase] = [
    // Content-Length (RFC 9110 §8.6, RFC 9112 §6.3)
    FramingCase(name: "CL with inner whitespace", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", error: .invalidContentLength),
    FramingCase(name: "CL in hex", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", error: .invalidContentLength),
    FramingCase(name: "CL list with an empty element", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", error: .invalidContentLength),
    FramingCase(name: "CL list with a sign", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, +5\r\n\r\n", error: .invalidContentLength),
    FramingCase(
        name: "CL overflowing Int64", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        error: .bodyTooLarge),
    FramingCase(
        name: "CL overflow next to a small value",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551621\r\nContent-Length: 5\r\n\r\n",
        error: .conflictingContentLength),
    FramingCase(
        name: "CL same value written differently is still one value, conflicting with another field",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\nContent-Length: 6\r\n\r\n", error: .conflictingContentLength),
    // Transfer-Encoding (RFC 9112 §6.1, §6.3, §7)
    FramingCase(
        name: "TE and CL, CL as a list", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0, 0\r\n\r\n",
        error: .contentLengthWithTransferEncoding),
    FramingCase(name: "TE identity", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", error: .invalidTransferEncoding),
    FramingCase(name: "TE chunked, identity", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", error: .invalidTransferEncoding),
    FramingCase(name: "TE of empty elements only", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", error: .invalidTransferEncoding),
    FramingCase(name: "TE quoted chunked", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", error: .invalidTransferEncoding),
    FramingCase(name: "TE chunked with a prefix", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", error: .invalidTransferEncoding),
    // Found by differential testing against llhttp: Unicode lowercasing maps U+212A KELVIN SIGN to "k", so this
    // read as chunked while every ASCII-case-insensitive parser sees an unknown coding.
    FramingCase(
        name: "TE chunked with a Kelvin sign for k", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u{212A}ed\r\n\r\n0\r\n\r\n",
        error: .invalidTransferEncoding),
    FramingCase(
        name: "TE chunked with a parameter", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        error: .invalidTransferEncoding),
    FramingCase(
        name: "TE chunked with an empty parameter", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked ;\r\n\r\n0\r\n\r\n",
        error: .invalidTransferEncoding),
    FramingCase(
        name: "TE chunked with a vertical tab", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{0B}\r\n\r\n",
        error: .invalidHeaderValue),
    FramingCase(
        name: "TE with space before the colon", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        error: .whitespaceBeforeColon),
    FramingCase(
        name: "TE folded onto a second line", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        error: .obsoleteLineFolding),
    // Chunk lines (RFC 9112 §7.1)
    FramingCase(name: "chunk size with a sign", raw: chunkedHead + "+5\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk size with 0x", raw: chunkedHead + "0x5\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk size with leading space", raw: chunkedHead + " 5\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk size with trailing space only", raw: chunkedHead + "5 \r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "empty chunk size", raw: chunkedHead + "\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk size overflow", raw: chunkedHead + "10000000000000000\r\n", error: .bodyTooLarge),
    FramingCase(name: "bare CR inside a chunk-size line", raw: chunkedHead + "5\rx\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "bare CR ending a chunk-size line", raw: chunkedHead + "5\r\rhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "bare LF in a chunk extension", raw: chunkedHead + "5;a\nb\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk data ended by bare LF", raw: chunkedHead + "5\r\nhello\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk data ended by bare CR", raw: chunkedHead + "5\r\nhello\r0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "last chunk ended by bare LF", raw: chunkedHead + "0\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunked body ended by bare LF", raw: chunkedHead + "0\r\n\n", error: .malformedChunk),
    // Chunk extensions (RFC 9112 §7.1.1: BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ])
    FramingCase(name: "chunk extension without a name", raw: chunkedHead + "5;\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension name with a space", raw: chunkedHead + "5;a b\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension with only a value", raw: chunkedHead + "5;=v\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension with an empty value", raw: chunkedHead + "5;a=\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension value not a token", raw: chunkedHead + "5;a=b/c\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension unterminated quote", raw: chunkedHead + "5;a=\"b\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension junk after a quote", raw: chunkedHead + "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension with trailing space", raw: chunkedHead + "5;a \r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "chunk extension with DEL", raw: chunkedHead + "5;a=\"\u{7F}\"\r\nhello\r\n0\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "last chunk with a bad extension", raw: chunkedHead + "0;;\r\n\r\n", error: .malformedChunk),
    // Trailer section (RFC 9112 §7.1.2, RFC 9110 §6.5)
    FramingCase(name: "trailer obs-fold", raw: chunkedHead + "0\r\nX-A: b\r\n c\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "trailer with whitespace before the colon", raw: chunkedHead + "0\r\nX-A : b\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "trailer with NUL", raw: chunkedHead + "0\r\nX-A: b\u{0}\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "trailer with bare CR", raw: chunkedHead + "0\r\nX-A: b\rX-B: c\r\n\r\n", error: .malformedChunk),
    FramingCase(name: "trailer ended by bare LF", raw: chunkedHead + "0\r\nX-A: b\n\r\n", error: .malformedChunk),
    FramingCase(name: "trailer with an empty name", raw: chunkedHead + "0\r\n: b\r\n\r\n", error: .malformedChunk),
    // Request line (RFC 9112 §3, §2.2)
    FramingCase(name: "bare CR inside the request line", raw: "GET / HTTP/1.1\rHost: a\r\n\r\n", error: .malformedRequestLine),
    FramingCase(name: "bare CR in the target", raw: "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "bare CR after the method", raw: "GET\r/ HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    FramingCase(name: "tab as a separator", raw: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    FramingCase(name: "trailing space after the version", raw: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    FramingCase(name: "method with a colon", raw: "GE:T / HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    FramingCase(name: "method with obs-text", raw: "G\u{E9}T / HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    // Request-target forms (RFC 9112 §3.2)
    FramingCase(name: "authority-form for GET", raw: "GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "authority-form for CONNECT, which is not served", raw: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "asterisk-form for POST", raw: "POST * HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "asterisk with a path", raw: "OPTIONS */x HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "absolute-form with an empty authority", raw: "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "absolute-form with userinfo", raw: "GET http://user:pw@a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "absolute-form authority with a quote", raw: "GET http://a\"b/x HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    FramingCase(name: "absolute-form of another scheme", raw: "GET ftp://a.example/x HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    // Field lines (RFC 9112 §5, RFC 9110 §5.5)
    FramingCase(name: "field name with obs-text", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-\u{E9}: b\r\n\r\n", error: .invalidHeaderName),
    FramingCase(name: "field name with a slash", raw: "GET / HTTP/1.1\r\nHost: a\r\nX/A: b\r\n\r\n", error: .invalidHeaderName),
    FramingCase(name: "field value with ESC", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: \u{1B}[0m\r\n\r\n", error: .invalidHeaderValue),
    FramingCase(name: "field value with a form feed", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{0C}\r\n\r\n", error: .invalidHeaderValue),
    FramingCase(name: "obs-fold with a tab", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", error: .obsoleteLineFolding),
    // Host (RFC 9112 §3.2)
    FramingCase(name: "Host twice with one value each, HTTP/1.0", raw: "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", error: .invalidHost),
    FramingCase(name: "Host as a list", raw: "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", error: .invalidHost),
    FramingCase(name: "absolute-form without Host", raw: "GET http://a.example/ HTTP/1.1\r\n\r\n", error: .invalidHost),
]

private let accepted: [(name: String, raw: String, expected: [Framed])] = [
    ("CL with leading zeros (1*DIGIT)", "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello",
     [.request(method: "POST", path: "/z", body: "hello")]),
    ("CL list of equal values, differently spelled", "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 5,05 ,\t5\r\n\r\nhello",
     [.request(method: "POST", path: "/z", body: "hello")]),
    ("chunk extensions: token, quoted value with escapes, BWS", chunkedHead
        + "5 ; a ; b = c ;d=\"q \\\" \\\\ ;x\"\r\nhello\r\n0;last\r\n\r\n",
     [.request(method: "POST", path: "/c", body: "hello")]),
    ("chunk size with leading zeros", chunkedHead + "0000000000000000000005\r\nhello\r\n0\r\n\r\n",
     [.request(method: "POST", path: "/c", body: "hello")]),
    ("TE list with empty elements and OWS", "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked ,\r\n\r\n0\r\n\r\n",
     [.request(method: "POST", path: "/c", body: "")]),
    ("absolute-form with a port and IPv6 literal", "GET http://[::1]:8080/p HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
     [.request(method: "GET", path: "/p", body: "")]),
]

@Suite("HTTP request framing against RFC 9112 and llhttp's rejections")
struct HTTPRequestFramingTests {
    @Test("a smuggling or malformed-framing vector is rejected with the right error", arguments: rejected)
    func rejects(_ framing: FramingCase) {
        #expect(feed(framing.raw).events == [.failure(framing.error)])
        #expect(feed(framing.raw, step: 1).events == [.failure(framing.error)])
    }

    @Test("strict does not mean wrong: these valid requests parse, whole and byte by byte")
    func accepts() {
        for valid in accepted {
            #expect(feed(valid.raw).events == valid.expected, "\(valid.name)")
            #expect(feed(valid.raw, step: 1).events == valid.expected, "\(valid.name)")
        }
    }

    @Test("each byte is accepted in a method, field name, trailer name or chunk-extension name exactly when it is a tchar, in a field or trailer value exactly when it is field-content")
    func everyByte() {
        let tchars = Set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        let head = Array(chunkedHead.utf8)
        func accepted(_ raw: [UInt8]) -> Bool {
            if case .request = feed(bytes: raw).events.first { return true }
            return false
        }
        for byte in UInt8.min...UInt8.max {
            let isToken = tchars.contains(byte)
            let isFieldContent = byte == 0x09 || (byte >= 0x20 && byte != 0x7F)
            let method = Array("G".utf8) + [byte] + Array("T / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            #expect(accepted(method) == isToken, "method byte \(byte)")
            let value = Array("GET / HTTP/1.1\r\nHost: a\r\nX-A: a".utf8) + [byte] + Array("b\r\n\r\n".utf8)
            #expect(accepted(value) == isFieldContent, "value byte \(byte)")
            let trailerValue = head + Array("0\r\nX-A: a".utf8) + [byte] + Array("b\r\n\r\n".utf8)
            #expect(accepted(trailerValue) == isFieldContent, "trailer value byte \(byte)")
            // A colon inside the name only moves where the name ends.
            if byte != UInt8(ascii: ":") {
                let name = Array("GET / HTTP/1.1\r\nHost: a\r\nX".utf8) + [byte] + Array("Y: v\r\n\r\n".utf8)
                #expect(accepted(name) == isToken, "name byte \(byte)")
                let trailerName = head + Array("0\r\nX".utf8) + [byte] + Array("Y: v\r\n\r\n".utf8)
                #expect(accepted(trailerName) == isToken, "trailer name byte \(byte)")
            }
            // "=" and ";" only move where the name ends.
            if byte != UInt8(ascii: "=") && byte != UInt8(ascii: ";") {
                let extensionName = head + Array("1;a".utf8) + [byte] + Array("b\r\nx\r\n0\r\n\r\n".utf8)
                #expect(accepted(extensionName) == isToken, "chunk-extension name byte \(byte)")
            }
        }
    }

    @Test("trailer fields never reach the headers or the framing, and the next request parses as sent")
    func trailersDoNotFrame() {
        let raw = chunkedHead + "5\r\nhello\r\n0\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n"
            + "Connection: close\r\n\r\n" + "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        for step in [nil, 1, 7] {
            let (events, requests) = feed(raw, step: step)
            #expect(
                events == [.request(method: "POST", path: "/c", body: "hello"), .request(method: "GET", path: "/next", body: "")])
            guard let first = requests.first else { continue }
            #expect(first.request.headers.values("Content-Length").isEmpty)
            #expect(first.request.headers.values("Host") == ["a"])
            #expect(first.request.headers.values("Transfer-Encoding") == ["chunked"])
            #expect(first.keepAlive, "Connection in a trailer must not end the connection")
            #expect(first.framing == .chunked)
        }
    }

    @Test("a trailer section is held to the header byte limit, however its lines arrive")
    func trailerBytes() {
        let small = HTTPParserLimits(maxRequestLineBytes: 64, maxHeaderBytes: 128, maxHeaderFields: 4, maxBodyBytes: 16)
        // One line over the limit, and several lines that each fit but together do not.
        let oneLong = chunkedHead + "0\r\nX-A: " + String(repeating: "v", count: 200) + "\r\n\r\n"
        let several = chunkedHead + "0\r\n" + String(repeating: "X-A: " + String(repeating: "v", count: 40) + "\r\n", count: 4) + "\r\n"
        for raw in [oneLong, several] {
            #expect(feed(raw, limits: small).events == [.failure(.headerSectionTooLarge)])
            #expect(feed(raw, step: 1, limits: small).events == [.failure(.headerSectionTooLarge)])
        }
        let fits = chunkedHead + "0\r\nX-A: " + String(repeating: "v", count: 100) + "\r\n\r\n"
        #expect(feed(fits, limits: small).events == [.request(method: "POST", path: "/c", body: "")])
    }

    @Test("more trailer fields than the limit is 431")
    func trailerCount() {
        let small = HTTPParserLimits(maxRequestLineBytes: 64, maxHeaderBytes: 128, maxHeaderFields: 4, maxBodyBytes: 16)
        let five = chunkedHead + "0\r\n" + String(repeating: "X: 1\r\n", count: 5) + "\r\n"
        #expect(feed(five, limits: small).events == [.failure(.tooManyHeaderFields)])
        let four = chunkedHead + "0\r\n" + String(repeating: "X: 1\r\n", count: 4) + "\r\n"
        #expect(feed(four, limits: small).events == [.request(method: "POST", path: "/c", body: "")])
    }

    @Test("a chunk extension as long as the chunk line allows passes; the overhead of many is bounded")
    func chunkExtensionLength() {
        let longExtension = "1;" + String(repeating: "e", count: HTTPParserLimits.maxChunkLineBytes - 4) + "\r\nx\r\n"
        #expect(feed(chunkedHead + longExtension + "0\r\n\r\n").events == [.request(method: "POST", path: "/c", body: "x")])
        let tooLong = "1;" + String(repeating: "e", count: HTTPParserLimits.maxChunkLineBytes - 3) + "\r\nx\r\n"
        #expect(feed(chunkedHead + tooLong + "0\r\n\r\n").events == [.failure(.malformedChunk)])
        // One-byte chunks each on a full 4096-byte line: sixteen fit the 16-byte body limit, but their
        // framing passes the 64 KiB overhead cap at the sixteenth line.
        let small = HTTPParserLimits(maxRequestLineBytes: 64, maxHeaderBytes: 128, maxHeaderFields: 4, maxBodyBytes: 16)
        let line = "0000000000000000000001;" + String(repeating: "e", count: HTTPParserLimits.maxChunkLineBytes - 25)
        let spin = String(repeating: line + "\r\nx\r\n", count: 16)
        #expect(feed(chunkedHead + spin + "0\r\n\r\n", limits: small).events.last == .failure(.bodyTooLarge))
    }
}
