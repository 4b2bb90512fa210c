import Glibc
import Testing

@testable import HTTPServer

@Suite("Response serialization and helpers")
struct ResponseWriterTests {
    private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
    private func dateLine(of response: String) -> String {
        response.split(separator: "\r\n").first { $0.hasPrefix("Date: ") }.map(String.init) ?? "no Date line"
    }

    @Test("a response has the status line, managed headers and the body")
    func serialize() {
        var writer = ResponseWriter(serverName: "stovepipe")
        let bytes = writer.serialize(
            status: 201, headers: HTTPHeaders([("Content-Type", "text/plain"), ("Content-Length", "1")]),
            body: Array("made".utf8), close: false, version: .http11, requestID: "r-1", omitBody: false
        )
        let response = text(bytes)
        #expect(response.hasPrefix("HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nServer: stovepipe\r\nDate: "))
        #expect(response.contains("\r\nX-Request-ID: r-1\r\nContent-Length: 4\r\n\r\nmade"))
        #expect(!response.contains("Content-Length: 1\r\n"))
        #expect(!response.contains("Connection:"))
    }

    @Test("an entity tag is written as the ETag field, in hexadecimal, on a 200 and a bodiless 304 alike")
    func entityTag() {
        var writer = ResponseWriter(serverName: "s")
        for (tag, expected) in [
            (EntityTag(0), #""0""#), (EntityTag(0x1f, 0x692c_2220), #""1f-692c2220""#),
            (EntityTag(.max, .max), #""ffffffffffffffff-ffffffffffffffff""#), (EntityTag(10, 0), #""a-0""#),
        ] {
            #expect(tag.text == expected)
            #expect(Array(expected.utf8).withUnsafeBufferPointer { tag.matches($0) })
            #expect(!Array((expected + " ").utf8).withUnsafeBufferPointer { tag.matches($0) })
            for status in [200, 304] {
                // serialize asserts that it wrote exactly the bytes it sized.
                let response = text(
                    writer.serialize(
                        status: status, headers: HTTPHeaders([("Content-Type", "application/json")]), body: Array("{}".utf8),
                        close: false, version: .http11, requestID: "r", omitBody: false, entityTag: tag))
                #expect(response.contains("\r\nContent-Type: application/json\r\nETag: \(expected)\r\nServer: s\r\n"), "\(response)")
                #expect(response.hasSuffix(status == 200 ? "\r\n\r\n{}" : "\r\n\r\n"), "\(response)")
            }
        }
        #expect(!Array(#""1""#.utf8).withUnsafeBufferPointer { EntityTag(2).matches($0) })
    }

    @Test("a response is exactly its status line, fields and body, sized in bytes")
    func exactBytes() {
        var writer = ResponseWriter(serverName: "s")
        let headers = HTTPHeaders([
            ("X-Name", "caf\u{E9}"), ("date", "never"), ("SERVER", "own"), ("x-request-id", "mine"),
            ("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=5"),
        ])
        let response = text(
            writer.serialize(
                status: 299, headers: headers, body: Array("0123456789".utf8), close: true, version: .http11,
                requestID: "ignored", omitBody: false))
        let dateLine = self.dateLine(of: response)
        #expect(dateLine.utf8.count == "Date: Sun, 06 Nov 1994 08:49:37 GMT".utf8.count)
        #expect(
            response == "HTTP/1.1 299 \r\nX-Name: caf\u{E9}\r\nSERVER: own\r\nx-request-id: mine\r\n\(dateLine)\r\n"
                + "Content-Length: 10\r\nConnection: close\r\n\r\n0123456789")
        let empty = text(
            writer.serialize(
                status: 200, headers: HTTPHeaders(), body: [], close: false, version: .http11, requestID: "r",
                omitBody: false))
        #expect(empty == "HTTP/1.1 200 OK\r\nServer: s\r\n\(self.dateLine(of: empty))\r\nX-Request-ID: r\r\nContent-Length: 0\r\n\r\n")
    }

    @Test("close and HTTP/1.0 keep-alive are stated")
    func connectionHeader() {
        var writer = ResponseWriter(serverName: "s")
        let closing = text(
            writer.serialize(
                status: 200, headers: HTTPHeaders(), body: [], close: true, version: .http11, requestID: nil,
                omitBody: false))
        #expect(closing.contains("Connection: close\r\n"))
        let old = text(
            writer.serialize(
                status: 200, headers: HTTPHeaders(), body: [], close: false, version: .http10, requestID: nil,
                omitBody: false))
        #expect(old.contains("Connection: keep-alive\r\n"))
        #expect(old.hasPrefix("HTTP/1.1 200 OK\r\n"))
    }

    @Test("204 and 304 carry no body and 204 no Content-Length; HEAD keeps the length only")
    func bodilessStatuses() {
        var writer = ResponseWriter(serverName: "s")
        let noContent = text(
            writer.serialize(
                status: 204, headers: HTTPHeaders(), body: Array("x".utf8), close: false, version: .http11,
                requestID: nil, omitBody: false))
        #expect(!noContent.contains("Content-Length"))
        #expect(noContent.hasSuffix("\r\n\r\n"))
        let head = text(
            writer.serialize(
                status: 200, headers: HTTPHeaders(), body: Array("abc".utf8), close: false, version: .http11,
                requestID: nil, omitBody: true))
        #expect(head.contains("Content-Length: 3\r\n"))
        #expect(head.hasSuffix("\r\n\r\n"))
    }

    @Test("error responses close and explain themselves")
    func errorResponse() {
        var writer = ResponseWriter(serverName: "s")
        let response = text(writer.errorResponse(.requestLineTooLong))
        #expect(response.hasPrefix("HTTP/1.1 414 URI Too Long\r\n"))
        #expect(response.contains("Connection: close\r\n"))
        let body = #"{"type":"about:blank","title":"URI Too Long","status":414,"detail":"request line too long"}"#
        #expect(response.contains("Content-Type: application/problem+json\r\n"))
        #expect(response.hasSuffix("\r\n\r\n" + body))
        #expect(response.contains("Content-Length: \(body.utf8.count)\r\n"))
    }

    @Test("JSON escaping of error details")
    func jsonEscaping() {
        #expect(ResponseWriter.jsonEscaped("a\"b\\c\u{01}\n") == #"a\"b\\c\u0001\u000a"#)
    }

    @Test("the Date header is an IMF-fixdate")
    func imfFixdate() {
        var moment = time_t(784_111_777)
        var parts = tm()
        gmtime_r(&moment, &parts)
        #expect(ResponseWriter.imfFixdate(parts) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }

    @Test("response header fields that could split the response are invalid")
    func headerValidity() {
        #expect(ResponseWriter.isValid(("X-A", "fine value")))
        #expect(!ResponseWriter.isValid(("X-A", "a\r\nb")))
        #expect(!ResponseWriter.isValid(("X A", "v")))
        #expect(!ResponseWriter.isValid(("", "v")))
    }

    @Test("only sane incoming request ids are reused")
    func requestIDs() {
        #expect(ServerContext.isSaneRequestID("abc-DEF_0.9"))
        #expect(ServerContext.isSaneRequestID(String(repeating: "a", count: 128)))
        #expect(!ServerContext.isSaneRequestID(String(repeating: "a", count: 129)))
        #expect(!ServerContext.isSaneRequestID(""))
        #expect(!ServerContext.isSaneRequestID("a b"))
        #expect(!ServerContext.isSaneRequestID("a/b"))
        #expect(!ServerContext.isSaneRequestID("é"))
    }

    @Test("durations convert to nanoseconds with saturation")
    func durations() {
        #expect(Duration.milliseconds(300).nanoseconds == 300_000_000)
        #expect(Duration.seconds(-1).nanoseconds == 0)
        #expect(Duration.seconds(Int64.max).nanoseconds == UInt64.max / 2)
    }
}
