import Testing

@testable import HTTPServer

private let defaultLimits = HTTPParserLimits(
    maxRequestLineBytes: 8 * 1024, maxHeaderBytes: 64 * 1024, maxHeaderFields: 100, maxBodyBytes: 1024 * 1024
)

/// What feeding some bytes to a fresh parser produced, in order.
enum Outcome: Equatable, CustomStringConvertible {
    case request(method: String, path: String, query: String, body: String, keepAlive: Bool)
    case sendContinue
    case failure(HTTPProtocolError)

    var description: String {
        switch self {
        case .request(let method, let path, let query, let body, let keepAlive):
            "request(\(method) \(path)?\(query) body=\(body.count)B keepAlive=\(keepAlive))"
        case .sendContinue: "sendContinue"
        case .failure(let error): "failure(\(error))"
        }
    }
}

/// Feeds `chunks` one after another, collecting every event; a failure ends the run.
private func run(_ chunks: [[UInt8]]) -> (outcomes: [Outcome], requests: [ParsedRequest]) {
    run(chunks, limits: defaultLimits)
}

/// Feeds `chunks` to a parser with `limits`, collecting every event; a failure ends the run. The framing tests use it too.
func run(
    _ chunks: [[UInt8]], limits: HTTPParserLimits
) -> (outcomes: [Outcome], requests: [ParsedRequest]) {
    var parser = HTTPRequestParser(limits: limits)
    var outcomes: [Outcome] = []
    var requests: [ParsedRequest] = []
    for chunk in chunks {
        parser.append(chunk)
        events: while true {
            switch parser.next() {
            case .needMoreBytes:
                break events
            case .sendContinue:
                outcomes.append(.sendContinue)
            case .request(let parsed):
                requests.append(parsed)
                let request = parsed.request
                outcomes.append(
                    .request(
                        method: request.method, path: request.path, query: request.query,
                        body: String(decoding: request.body, as: UTF8.self), keepAlive: parsed.keepAlive
                    )
                )
            case .failure(let error):
                outcomes.append(.failure(error))
                return (outcomes, requests)
            }
        }
    }
    return (outcomes, requests)
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Valid requests and what each must parse to.
struct ValidCase: CustomTestStringConvertible, Sendable {
    let name: String
    let raw: String
    let expected: [Outcome]
    var testDescription: String { name }
}

private let validCases: [ValidCase] = [
    ValidCase(
        name: "simple GET", raw: "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        expected: [.request(method: "GET", path: "/healthz", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "query and percent-encoded path",
        raw: "GET /queues/a%2Fb/ingest?x=1&y=%20 HTTP/1.1\r\nHost: a\r\n\r\n",
        expected: [.request(method: "GET", path: "/queues/a/b/ingest", query: "x=1&y=%20", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "leading empty line is ignored", raw: "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        expected: [.request(method: "GET", path: "/", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "Content-Length body", raw: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        expected: [.request(method: "POST", path: "/x", query: "", body: "hello", keepAlive: true)]
    ),
    ValidCase(
        name: "identical repeated Content-Length",
        raw: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
        expected: [.request(method: "POST", path: "/x", query: "", body: "abc", keepAlive: true)]
    ),
    ValidCase(
        name: "chunked body with extension and trailer",
        raw: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        expected: [.request(method: "POST", path: "/c", query: "", body: "hello world", keepAlive: true)]
    ),
    ValidCase(
        name: "chunked in upper case hex",
        raw: "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        expected: [.request(method: "POST", path: "/c", query: "", body: "0123456789", keepAlive: true)]
    ),
    ValidCase(
        name: "HTTP/1.2 is handled as HTTP/1.1 (RFC 9110 §6.2)", raw: "GET /new HTTP/1.2\r\nHost: a\r\n\r\n",
        expected: [.request(method: "GET", path: "/new", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "HTTP/1.0 closes by default", raw: "GET /old HTTP/1.0\r\n\r\n",
        expected: [.request(method: "GET", path: "/old", query: "", body: "", keepAlive: false)]
    ),
    ValidCase(
        name: "HTTP/1.0 keep-alive on request", raw: "GET /old HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        expected: [.request(method: "GET", path: "/old", query: "", body: "", keepAlive: true)]
    ),
    // llhttp keeps this connection open (keep-alive wins for HTTP/1.0); RFC 9112 §9.6 says close wins.
    ValidCase(
        name: "HTTP/1.0 keep-alive together with close closes", raw: "GET /old HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        expected: [.request(method: "GET", path: "/old", query: "", body: "", keepAlive: false)]
    ),
    ValidCase(
        name: "HTTP/1.1 Connection: close", raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n",
        expected: [.request(method: "GET", path: "/", query: "", body: "", keepAlive: false)]
    ),
    ValidCase(
        name: "absolute-form target", raw: "GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
        expected: [.request(method: "GET", path: "/a/b", query: "q=1", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "absolute-form without path", raw: "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
        expected: [.request(method: "GET", path: "/", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "asterisk-form for OPTIONS", raw: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        expected: [.request(method: "OPTIONS", path: "*", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "Host forms: name and port, IP literal, empty",
        raw: "GET /1 HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\nGET /2 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"
            + "GET /3 HTTP/1.1\r\nHost:\r\n\r\nGET /4 HTTP/1.1\r\nHost: xn--caf-dma.example_-~%41!$&'()*+,;=\r\n\r\n",
        expected: [
            .request(method: "GET", path: "/1", query: "", body: "", keepAlive: true),
            .request(method: "GET", path: "/2", query: "", body: "", keepAlive: true),
            .request(method: "GET", path: "/3", query: "", body: "", keepAlive: true),
            .request(method: "GET", path: "/4", query: "", body: "", keepAlive: true),
        ]
    ),
    ValidCase(
        name: "extension method token", raw: "M-SEARCH!~ / HTTP/1.1\r\nHost: a\r\n\r\n",
        expected: [.request(method: "M-SEARCH!~", path: "/", query: "", body: "", keepAlive: true)]
    ),
    ValidCase(
        name: "Expect 100-continue before the body",
        raw: "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
        expected: [.sendContinue, .request(method: "PUT", path: "/e", query: "", body: "ok", keepAlive: true)]
    ),
    ValidCase(
        // RFC 9110 §10.1.1, §5.6.1: Expect is a list, whose empty elements a recipient ignores.
        name: "Expect as a list with empty elements",
        raw: "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: , 100-continue ,\r\nContent-Length: 2\r\n\r\nok",
        expected: [.sendContinue, .request(method: "PUT", path: "/e", query: "", body: "ok", keepAlive: true)]
    ),
    ValidCase(
        name: "an empty Expect expects nothing",
        raw: "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: \r\nContent-Length: 2\r\n\r\nok",
        expected: [.request(method: "PUT", path: "/e", query: "", body: "ok", keepAlive: true)]
    ),
    ValidCase(
        name: "pipelined requests",
        raw: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
            + "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        expected: [
            .request(method: "GET", path: "/1", query: "", body: "", keepAlive: true),
            .request(method: "POST", path: "/2", query: "", body: "x", keepAlive: true),
            .request(method: "GET", path: "/3", query: "", body: "", keepAlive: false),
        ]
    ),
    ValidCase(
        name: "field values with obs-text and inner whitespace",
        raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t a \t b \t\r\nX-B: caf\u{E9}\r\nX-Empty:\r\n\r\n",
        expected: [.request(method: "GET", path: "/", query: "", body: "", keepAlive: true)]
    ),
]

@Suite("HTTP request parser")
struct HTTPRequestParserTests {
    @Test("a valid request parses when fed whole", arguments: validCases)
    func validWhole(_ valid: ValidCase) {
        // Fed whole, a body arrives with its head, so no 100 Continue is due.
        #expect(run([bytes(valid.raw)]).outcomes == valid.expected.filter { $0 != .sendContinue })
    }

    @Test("a valid request parses the same when split at every byte boundary", arguments: validCases)
    func validSplitEverywhere(_ valid: ValidCase) {
        let raw = bytes(valid.raw)
        for split in 1..<raw.count {
            let outcomes = run([Array(raw[..<split]), Array(raw[split...])]).outcomes
            // Once body bytes arrive with the head, 100 Continue is pointless and skipped.
            let expected = valid.expected.filter { $0 != .sendContinue }
            #expect(outcomes.filter { $0 != .sendContinue } == expected, "split at \(split)")
        }
    }

    @Test("a valid request parses the same when fed one byte at a time", arguments: validCases)
    func validByteByByte(_ valid: ValidCase) {
        #expect(run(bytes(valid.raw).map { [$0] }).outcomes == valid.expected)
    }

    @Test("headers keep order, duplicates and trimmed values")
    func headerValues() throws {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-A: \t a \t b \t\r\nx-a: second\r\nX-Empty:\r\n\r\n"
        let request = try #require(run([bytes(raw)]).requests.first?.request)
        #expect(request.headers.fields.map(\.name) == ["Host", "X-A", "x-a", "X-Empty"])
        #expect(request.headers.values("x-A") == ["a \t b", "second"])
        #expect(request.headers["X-Empty"] == "")
        #expect(request.target == "/")
        #expect(request.version == .http11)
    }

    @Test("field names match ignoring ASCII letter case only: symbols a bit 0x20 apart stay distinct")
    func fieldNameCaseFolding() {
        // RFC 9110 §5.1: field names are case-insensitive, which for a token means its letters' ASCII case.
        let headers = HTTPHeaders([("X^Y", "caret"), ("a@b", "at"), ("P_Q", "underscore"), ("Content-Type", "t")])
        #expect(headers["x~y"] == nil)
        #expect(headers["x^y"] == "caret")
        #expect(headers["a`b"] == nil)
        #expect(headers["A@B"] == "at")
        #expect(headers["p\u{7F}q"] == nil)
        #expect(headers["CONTENT-type"] == "t")
        #expect(headers.values("X~Y").isEmpty)
        #expect(!Array("X-{a}".utf8).withUnsafeBufferPointer { ASCII.equalIgnoringASCIICase($0, "x-[A]") })
        #expect(Array("X-{a}".utf8).withUnsafeBufferPointer { ASCII.equalIgnoringASCIICase($0, "x-{A}") })
    }

    @Test("methods and field names keep their exact spelling, whether or not it is one kept as a literal")
    func nameSpellings() {
        func spelled(_ text: String, _ name: (UnsafeBufferPointer<UInt8>) -> String) -> String {
            Array(text.utf8).withUnsafeBufferPointer(name)
        }
        let methods = ["GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]
        for method in methods + methods.map({ $0.lowercased() }) + ["Get", "GETS", "PROPFIND", "M-SEARCH"] {
            #expect(spelled(method, HeadParser.methodName) == method)
        }
        let names = [
            "Host", "Accept", "Expect", "User-Agent", "Connection", "Content-Type", "X-Request-ID", "Authorization",
            "Content-Length", "Accept-Encoding", "X-Forwarded-For", "Transfer-Encoding",
        ]
        for name in names + names.map({ $0.lowercased() }) + names.map({ $0.uppercased() }) + ["X-A", "Hos", "Hosts"] {
            #expect(spelled(name, HeadParser.fieldName) == name)
        }
    }

    @Test("field values are checked eight bytes at a time exactly as byte by byte")
    func fieldValueBytes() {
        var mismatches: [(length: Int, position: Int, byte: UInt8)] = []
        for length in 1..<20 {
            for position in 0..<length {
                for byte in UInt8.min...UInt8.max {
                    var value = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    value[position] = byte
                    let expected = value.allSatisfy(ASCII.isFieldValueByte)
                    if value.withUnsafeBufferPointer(ASCII.areFieldValueBytes) != expected {
                        mismatches.append((length, position, byte))
                    }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
        #expect(ASCII.areFieldValueBytes(UnsafeBufferPointer(start: nil, count: 0)))
    }

    @Test("raw path, target and wire bytes are reported")
    func targetParts() throws {
        let raw = "POST /q/a%2Fb?z=%41 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
        let parsed = try #require(run([bytes(raw)]).requests.first)
        let request = parsed.request
        #expect(request.target == "/q/a%2Fb?z=%41")
        #expect(request.rawPath == "/q/a%2Fb")
        #expect(request.path == "/q/a/b")
        #expect(request.query == "z=%41")
        #expect(request.version == .http10)
        #expect(parsed.wireBytes == raw.utf8.count)
    }

    @Test("HEAD is recognised")
    func headRequest() throws {
        let request = try #require(run([bytes("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")]).requests.first)
        #expect(request.isHead)
    }

    @Test("an incomplete request asks for more bytes and reports progress")
    func incomplete() {
        var parser = HTTPRequestParser(limits: defaultLimits)
        #expect(!parser.isMidRequest)
        parser.append(bytes("GET / HTTP/1.1\r\nHo"))
        guard case .needMoreBytes = parser.next() else {
            Issue.record("expected needMoreBytes")
            return
        }
        #expect(parser.isMidRequest)
        #expect(parser.isReadingHead)
        parser.append(bytes("st: a\r\nContent-Length: 4\r\n\r\nab"))
        guard case .needMoreBytes = parser.next() else {
            Issue.record("expected needMoreBytes in the body")
            return
        }
        #expect(!parser.isReadingHead)
        #expect(parser.isMidRequest)
        parser.append(bytes("cd"))
        guard case .request(let parsed) = parser.next() else {
            Issue.record("expected the request")
            return
        }
        #expect(parsed.request.body == bytes("abcd"))
        #expect(!parser.isMidRequest)
        #expect(parser.bufferedByteCount == 0)
    }

    @Test("no 100 Continue when the body arrived with the head")
    func noContinueWhenBodyPresent() {
        let raw = "PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
        #expect(!run([bytes(raw)]).outcomes.contains(.sendContinue))
    }

    @Test("no 100 Continue without a body or for HTTP/1.0")
    func noContinueWithoutBody() {
        #expect(
            run([bytes("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")]).outcomes
                == [.request(method: "GET", path: "/", query: "", body: "", keepAlive: true)]
        )
        let old = run([bytes("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")]).outcomes
        #expect(old.isEmpty)
    }
}

/// Requests every strictness rule must reject, with the error each must produce.
struct InvalidCase: CustomTestStringConvertible, Sendable {
    let name: String
    let raw: String
    let error: HTTPProtocolError
    var testDescription: String { name }
}

private let invalidCases: [InvalidCase] = [
    InvalidCase(
        name: "Content-Length with Transfer-Encoding",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        error: .contentLengthWithTransferEncoding
    ),
    InvalidCase(
        name: "Transfer-Encoding before Content-Length",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        error: .contentLengthWithTransferEncoding
    ),
    InvalidCase(
        name: "differing Content-Length fields",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        error: .conflictingContentLength
    ),
    InvalidCase(
        name: "differing Content-Length list", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
        error: .conflictingContentLength
    ),
    InvalidCase(
        name: "non-numeric Content-Length", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n",
        error: .invalidContentLength
    ),
    InvalidCase(
        name: "negative Content-Length", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        error: .invalidContentLength
    ),
    InvalidCase(
        name: "signed Content-Length", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
        error: .invalidContentLength
    ),
    InvalidCase(
        name: "empty Content-Length", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        error: .invalidContentLength
    ),
    InvalidCase(
        name: "Transfer-Encoding gzip", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        error: .invalidTransferEncoding
    ),
    InvalidCase(
        name: "Transfer-Encoding chunked, gzip",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        error: .invalidTransferEncoding
    ),
    InvalidCase(
        name: "Transfer-Encoding gzip, chunked",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        error: .unsupportedTransferEncoding
    ),
    InvalidCase(
        name: "Transfer-Encoding chunked twice",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        error: .invalidTransferEncoding
    ),
    InvalidCase(
        name: "Transfer-Encoding in HTTP/1.0", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        error: .invalidTransferEncoding
    ),
    InvalidCase(
        name: "chunk size not hex",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        error: .malformedChunk
    ),
    InvalidCase(
        name: "chunk data longer than its size",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        error: .malformedChunk
    ),
    InvalidCase(
        name: "chunk size line with bare LF",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        error: .malformedChunk
    ),
    InvalidCase(
        name: "chunk size with junk after it",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
        error: .malformedChunk
    ),
    InvalidCase(
        name: "malformed trailer",
        raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
        error: .malformedChunk
    ),
    InvalidCase(name: "HTTP/1.1 without Host", raw: "GET / HTTP/1.1\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "two Host fields", raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "Host with a path", raw: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "Host with userinfo", raw: "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "Host with a space", raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "Host with obs-text", raw: "GET / HTTP/1.1\r\nHost: caf\u{E9}\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "invalid Host in HTTP/1.0", raw: "GET / HTTP/1.0\r\nHost: a<b>\r\n\r\n", error: .invalidHost),
    InvalidCase(
        name: "whitespace before the colon", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
        error: .whitespaceBeforeColon
    ),
    InvalidCase(
        name: "tab before the colon", raw: "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", error: .whitespaceBeforeColon
    ),
    InvalidCase(
        name: "obs-fold", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n", error: .obsoleteLineFolding
    ),
    InvalidCase(
        name: "whitespace before the first field", raw: "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        error: .obsoleteLineFolding
    ),
    InvalidCase(
        name: "NUL in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n", error: .invalidHeaderValue
    ),
    InvalidCase(
        name: "CR in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", error: .invalidHeaderValue
    ),
    InvalidCase(
        name: "bare LF ending a field line", raw: "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
        error: .invalidLineEnding
    ),
    InvalidCase(
        name: "bare LF ending the request line", raw: "GET / HTTP/1.1\nHost: a\r\n\r\n", error: .invalidLineEnding),
    InvalidCase(
        name: "DEL in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{7F}\r\n\r\n", error: .invalidHeaderValue
    ),
    InvalidCase(
        name: "field without colon", raw: "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", error: .invalidHeaderName
    ),
    InvalidCase(name: "empty field name", raw: "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", error: .invalidHeaderName),
    InvalidCase(
        name: "non-token field name", raw: "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", error: .invalidHeaderName
    ),
    InvalidCase(name: "method with a slash", raw: "GE/T / HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    InvalidCase(name: "method with a NUL", raw: "G\u{0}T / HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidMethod),
    InvalidCase(name: "empty method", raw: " / HTTP/1.1\r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    InvalidCase(
        name: "two spaces after the method", raw: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    InvalidCase(name: "missing version", raw: "GET /\r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    InvalidCase(name: "lower-case version", raw: "GET / http/1.1\r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    InvalidCase(
        name: "version with two minor digits", raw: "GET / HTTP/1.10\r\nHost: a\r\n\r\n", error: .malformedRequestLine),
    InvalidCase(name: "HTTP/2.0", raw: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", error: .unsupportedVersion),
    InvalidCase(name: "HTTP/0.9", raw: "GET / HTTP/0.9\r\nHost: a\r\n\r\n", error: .unsupportedVersion),
    InvalidCase(name: "HTTP/1.2 without Host, as HTTP/1.1", raw: "GET / HTTP/1.2\r\n\r\n", error: .invalidHost),
    InvalidCase(name: "relative target", raw: "GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(name: "asterisk for GET", raw: "GET * HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(name: "fragment in target", raw: "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(name: "bad percent escape", raw: "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(name: "truncated percent escape", raw: "GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(name: "control byte in target", raw: "GET /a\u{1}b HTTP/1.1\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(
        name: "control byte in a target without a version", raw: "GET /a\u{1}b\r\nHost: a\r\n\r\n", error: .invalidTarget),
    InvalidCase(
        name: "unknown expectation", raw: "GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
        error: .unsupportedExpectation
    ),
]

@Suite("HTTP request parser strictness")
struct HTTPRequestParserStrictnessTests {
    @Test("a malformed request fails with the right error", arguments: invalidCases)
    func rejects(_ invalid: InvalidCase) {
        #expect(run([bytes(invalid.raw)]).outcomes == [.failure(invalid.error)])
    }

    @Test("a malformed request fails the same when fed one byte at a time", arguments: invalidCases)
    func rejectsByteByByte(_ invalid: InvalidCase) {
        #expect(run(bytes(invalid.raw).map { [$0] }).outcomes.last == .failure(invalid.error))
    }

    @Test("a failed parser stays failed")
    func staysFailed() {
        var parser = HTTPRequestParser(limits: defaultLimits)
        parser.append(bytes("GET / HTTP/9.9\r\n\r\n"))
        guard case .failure(.unsupportedVersion) = parser.next() else {
            Issue.record("expected unsupportedVersion")
            return
        }
        parser.append(bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        guard case .failure(.unsupportedVersion) = parser.next() else {
            Issue.record("expected the parser to stay failed")
            return
        }
    }

    @Test("each error maps to its status")
    func statuses() {
        #expect(HTTPProtocolError.requestLineTooLong.status == 414)
        #expect(HTTPProtocolError.headerSectionTooLarge.status == 431)
        #expect(HTTPProtocolError.tooManyHeaderFields.status == 431)
        #expect(HTTPProtocolError.bodyTooLarge.status == 413)
        #expect(HTTPProtocolError.headerTimeout.status == 408)
        #expect(HTTPProtocolError.unsupportedVersion.status == 505)
        #expect(HTTPProtocolError.unsupportedTransferEncoding.status == 501)
        #expect(HTTPProtocolError.unsupportedExpectation.status == 417)
        let badRequests: [HTTPProtocolError] = [
            .malformedRequestLine, .invalidMethod, .invalidTarget, .invalidLineEnding, .invalidHeaderName,
            .whitespaceBeforeColon, .obsoleteLineFolding, .invalidHeaderValue, .invalidHost, .invalidContentLength,
            .conflictingContentLength, .contentLengthWithTransferEncoding, .invalidTransferEncoding, .malformedChunk,
        ]
        for error in badRequests { #expect(error.status == 400, "\(error)") }
    }
}

@Suite("HTTP request parser limits")
struct HTTPRequestParserLimitTests {
    private let small = HTTPParserLimits(
        maxRequestLineBytes: 64, maxHeaderBytes: 128, maxHeaderFields: 4, maxBodyBytes: 16)

    @Test("a request line at the limit passes; one byte more is 414")
    func requestLine() {
        let atLimit = "GET /" + String(repeating: "a", count: 64 - "GET / HTTP/1.1".count) + " HTTP/1.1"
        #expect(atLimit.utf8.count == 64)
        #expect(run([bytes(atLimit + "\r\nHost: a\r\n\r\n")], limits: small).requests.count == 1)
        let over = "GET /" + String(repeating: "a", count: 65 - "GET / HTTP/1.1".count) + " HTTP/1.1"
        #expect(run([bytes(over + "\r\nHost: a\r\n\r\n")], limits: small).outcomes == [.failure(.requestLineTooLong)])
    }

    @Test("an unterminated long request line is 414 before its end arrives")
    func requestLineUnterminated() {
        let outcomes = run([bytes("GET /" + String(repeating: "a", count: 100))], limits: small).outcomes
        #expect(outcomes == [.failure(.requestLineTooLong)])
    }

    @Test("limits as large as Int allows parse requests instead of overflowing")
    func hugeLimits() {
        let huge = HTTPParserLimits(
            maxRequestLineBytes: .max, maxHeaderBytes: .max, maxHeaderFields: .max, maxBodyBytes: .max)
        #expect(run([bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n")], limits: huge).requests.count == 1)
        #expect(run([bytes("GET /unterminated")], limits: huge).outcomes.isEmpty)
    }

    @Test("the default request-line limit is 8 KiB")
    func defaultRequestLine() {
        let target = "/" + String(repeating: "a", count: 8 * 1024)
        #expect(run([bytes("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n")]).outcomes == [.failure(.requestLineTooLong)])
    }

    @Test("a header section over the byte limit is 431, even unterminated")
    func headerBytes() {
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 200) + "\r\n\r\n"
        #expect(run([bytes(big)], limits: small).outcomes == [.failure(.headerSectionTooLarge)])
        let unterminated = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 200)
        #expect(run([bytes(unterminated)], limits: small).outcomes == [.failure(.headerSectionTooLarge)])
    }

    @Test("the default header limit is 64 KiB")
    func defaultHeaderBytes() {
        let value = String(repeating: "v", count: 1000)
        let fields = (0..<70).map { "X-\($0): \(value)\r\n" }.joined()
        #expect(
            run([bytes("GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n")]).outcomes == [
                .failure(.headerSectionTooLarge)
            ])
    }

    @Test("more fields than the limit is 431; exactly the limit passes")
    func fieldCount() {
        let four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
        #expect(run([bytes(four)], limits: small).requests.count == 1)
        let five = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"
        #expect(run([bytes(five)], limits: small).outcomes == [.failure(.tooManyHeaderFields)])
    }

    @Test("the default field limit is 100")
    func defaultFieldCount() {
        let fields = (0..<100).map { "X-\($0): v\r\n" }.joined()
        #expect(
            run([bytes("GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n")]).outcomes == [.failure(.tooManyHeaderFields)]
        )
        let ninetyNine = (0..<99).map { "X-\($0): v\r\n" }.joined()
        #expect(run([bytes("GET / HTTP/1.1\r\nHost: a\r\n" + ninetyNine + "\r\n")]).requests.count == 1)
    }

    @Test("Content-Length over the body limit is 413 before any body byte")
    func bodyByContentLength() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n"
        #expect(run([bytes(raw)], limits: small).outcomes == [.failure(.bodyTooLarge)])
        let atLimit = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n" + String(repeating: "x", count: 16)
        #expect(run([bytes(atLimit)], limits: small).requests.first?.request.body.count == 16)
    }

    @Test("a huge Content-Length is 413, not a crash")
    func hugeContentLength() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n"
        #expect(run([bytes(raw)]).outcomes == [.failure(.bodyTooLarge)])
    }

    @Test("Expect 100-continue with an oversized body gets 413 and no 100")
    func continueTooLarge() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n"
        #expect(run([bytes(raw)]).outcomes == [.failure(.bodyTooLarge)])
    }

    @Test("chunked bodies are capped while decoding")
    func chunkedLimit() {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        let fits = head + "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        #expect(run([bytes(fits)], limits: small).requests.first?.request.body.count == 16)
        let over = head + "8\r\n12345678\r\n8\r\n12345678\r\n1\r\n"
        #expect(run([bytes(over)], limits: small).outcomes == [.failure(.bodyTooLarge)])
        let hugeSize = head + "FFFFFFFFFFFFFFFFFFFFFFFF\r\n"
        #expect(run([bytes(hugeSize)], limits: small).outcomes == [.failure(.bodyTooLarge)])
    }

    @Test("a chunk's declared size is not allocated before its bytes arrive")
    func chunkSizeIsNotReserved() {
        // A client may open --max-connections connections and send each a head and one byte of a chunk declared
        // --max-body-bytes long: what the server holds must follow what was sent, not what was announced.
        var parser = HTTPRequestParser(limits: defaultLimits)
        parser.append(bytes("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\nx"))
        guard case .needMoreBytes = parser.next() else {
            Issue.record("one byte of a long chunk should leave the parser waiting")
            return
        }
        #expect(parser.heldBytes < 64 * 1024, "\(parser.heldBytes) bytes held for one byte of body")
    }

    @Test("an endless chunk-size line is malformed")
    func chunkLine() {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        let raw = head + "1;" + String(repeating: "e", count: 5000)
        #expect(run([bytes(raw)]).outcomes == [.failure(.malformedChunk)])
    }

    @Test("endless leading empty lines are rejected")
    func leadingEmptyLines() {
        let raw = String(repeating: "\r\n", count: 40)
        #expect(run([bytes(raw)], limits: small).outcomes == [.failure(.malformedRequestLine)])
    }

    @Test("with nothing buffered the parser asks for more bytes and still counts leading empty lines")
    func nothingBuffered() {
        var parser = HTTPRequestParser(limits: small)
        guard case .needMoreBytes = parser.next() else {
            Issue.record("a fresh parser should ask for more bytes")
            return
        }
        for _ in 0..<40 {
            parser.append(bytes("\r\n"))
            if case .failure(let error) = parser.next() {
                #expect(error == .malformedRequestLine)
                return
            }
            // Asked again with the empty line consumed and nothing buffered.
            guard case .needMoreBytes = parser.next(), !parser.isMidRequest else {
                Issue.record("an empty buffer between requests should ask for more bytes")
                return
            }
        }
        Issue.record("40 empty lines arriving one by one should exceed the request-line limit")
    }
}

@Suite("HTTP request parser robustness")
struct HTTPRequestParserFuzzTests {
    /// A deterministic generator, so a failure reproduces.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("mutated requests fed in random pieces never trap and always end in a request, a failure or a wait")
    func mutations() {
        var random = SplitMix(state: 0x5EED)
        let interesting: [UInt8] = Array("\r\n :;,0123456789abcdefABCDEF\t\u{0}\u{7F}".utf8) + [0x80, 0xFF]
        let small = HTTPParserLimits(
            maxRequestLineBytes: 128, maxHeaderBytes: 256, maxHeaderFields: 8, maxBodyBytes: 64)
        var requests = 0
        var failures = 0
        for round in 0..<3000 {
            var raw = bytes(validCases[round % validCases.count].raw)
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: 0..<raw.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: raw[position] = interesting.randomElement(using: &random) ?? 0
                case 1: raw.insert(interesting.randomElement(using: &random) ?? 0, at: position)
                default: raw.remove(at: position)
                }
                if raw.isEmpty { raw = [0] }
            }
            var chunks: [[UInt8]] = []
            var rest = raw[...]
            while !rest.isEmpty {
                let size = Int.random(in: 1...max(1, rest.count), using: &random)
                chunks.append(Array(rest.prefix(size)))
                rest = rest.dropFirst(size)
            }
            let limits = round.isMultiple(of: 2) ? defaultLimits : small
            let outcome = run(chunks, limits: limits)
            requests += outcome.requests.count
            if case .failure = outcome.outcomes.last { failures += 1 }
        }
        // Both kinds of ending must occur, or the mutations are not reaching the parser's checks.
        #expect(requests > 0)
        #expect(failures > 0)
    }
}
