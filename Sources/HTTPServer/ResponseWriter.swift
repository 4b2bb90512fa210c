import Glibc

/// Serializes responses; each thread owns one, so its cached `Date` line needs no lock.
struct ResponseWriter {
    private let serverLine: [UInt8]
    private var dateSecond = -1
    private var dateLine: [UInt8] = []

    init(serverName: String) {
        let safeName = serverName.utf8.allSatisfy(ASCII.isFieldValueByte) ? serverName : "stovepipe"
        serverLine = Array("Server: \(safeName)\r\n".utf8)
    }

    /// The interim response to `Expect: 100-continue` (RFC 9110 §10.1.1).
    static let continueResponse: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// The bytes of a complete response.
    /// - Parameters:
    ///   - close: Say `Connection: close`; otherwise HTTP/1.0 clients get `Connection: keep-alive`.
    ///   - requestID: Sent as `X-Request-ID` unless `headers` already has one.
    ///   - omitBody: For HEAD: send the headers, Content-Length included, but no body (RFC 9110 §9.3.2).
    ///   - entityTag: Sent as `ETag` after `headers`.
    mutating func serialize(
        status: Int, headers: HTTPHeaders, body: [UInt8], close: Bool, version: HTTPVersion,
        requestID: String?, omitBody: Bool, entityTag: EntityTag? = nil
    ) -> [UInt8] {
        refreshDateLine()
        let reason = Self.reasonPhrase(status)
        // RFC 9110 §8.6: no Content-Length in 1xx or 204 responses; a 304 carries no body, and
        // omitting its length is always correct. Everything else gets one: we never stream.
        let bodyAllowed = !(status < 200 || status == 204 || status == 304)
        let sendsBody = bodyAllowed && !omitBody
        let connectionLine: StaticString?
        if close {
            connectionLine = "Connection: close\r\n"
        } else if version == .http10 {
            // RFC 9112 §9.3 and Appendix C.2.2: an HTTP/1.0 client needs to hear that we persist.
            connectionLine = "Connection: keep-alive\r\n"
        } else {
            connectionLine = nil
        }

        // The exact size first, so the bytes are written into one allocation without appends.
        var hasServer = false
        var hasRequestID = false
        var size = "HTTP/1.1 ".utf8.count + ByteCursor.decimalLength(status) + 1 + reason.utf8CodeUnitCount + 2
        for field in headers.fields {
            switch Self.managedField(field.name) {
            case .managed: continue
            case .server: hasServer = true
            case .requestID: hasRequestID = true
            case .other: break
            }
            size += field.name.utf8.count + 2 + field.value.utf8.count + 2
        }
        let ownRequestID = hasRequestID ? nil : requestID
        if !hasServer { size += serverLine.count }
        size += dateLine.count
        if let ownRequestID { size += "X-Request-ID: ".utf8.count + ownRequestID.utf8.count + 2 }
        if let entityTag { size += "ETag: ".utf8.count + entityTag.length + 2 }
        if bodyAllowed { size += "Content-Length: ".utf8.count + ByteCursor.decimalLength(body.count) + 2 }
        size += (connectionLine?.utf8CodeUnitCount ?? 0) + 2
        if sendsBody { size += body.count }

        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initializedCount in
            var out = ByteCursor(buffer)
            // RFC 9110 §6.2: a server sends its own highest conformant version, also to HTTP/1.0 clients.
            out.write("HTTP/1.1 ")
            out.writeDecimal(status)
            out.write(" ")
            out.write(reason)
            out.write("\r\n")
            for field in headers.fields where Self.managedField(field.name) != .managed {
                out.write(string: field.name)
                out.write(": ")
                out.write(string: field.value)
                out.write("\r\n")
            }
            if let entityTag {
                out.write("ETag: ")
                out.write(entityTag)
                out.write("\r\n")
            }
            if !hasServer { out.write(serverLine) }
            out.write(dateLine)
            if let ownRequestID {
                out.write("X-Request-ID: ")
                out.write(string: ownRequestID)
                out.write("\r\n")
            }
            if bodyAllowed {
                out.write("Content-Length: ")
                out.writeDecimal(body.count)
                out.write("\r\n")
            }
            if let connectionLine { out.write(connectionLine) }
            out.write("\r\n")
            if sendsBody { out.write(body) }
            assert(out.written == size, "the response size was miscounted")
            initializedCount = out.written
        }
    }

    /// A complete error response for a protocol error; it always closes.
    mutating func errorResponse(_ error: HTTPProtocolError) -> [UInt8] {
        errorResponse(status: error.status, message: error.reason)
    }

    /// A complete RFC 9457 problem+json response, by default one that closes the connection.
    mutating func errorResponse(
        status: Int, message: String, extraHeaders: HTTPHeaders = HTTPHeaders(), close: Bool = true,
        version: HTTPVersion = .http11, omitBody: Bool = false
    ) -> [UInt8] {
        var headers = extraHeaders
        headers.add("Content-Type", "application/problem+json")
        let title = Self.reasonPhrase(status).description
        let body = #"{"type":"about:blank","title":"\#(Self.jsonEscaped(title))","status":\#(status),"detail":"\#(Self.jsonEscaped(message))"}"#
        return serialize(
            status: status, headers: headers, body: Array(body.utf8), close: close,
            version: version, requestID: nil, omitBody: omitBody
        )
    }

    /// The 503 with `Retry-After: 1` for a request shed unhandled because the workers are behind.
    mutating func shedResponse(close: Bool, version: HTTPVersion, omitBody: Bool) -> [UInt8] {
        var headers = HTTPHeaders()
        headers.add("Retry-After", "1")
        return errorResponse(
            status: 503, message: "server busy", extraHeaders: headers, close: close, version: version,
            omitBody: omitBody)
    }

    /// `text` as the inside of a JSON string (RFC 8259 §7).
    static func jsonEscaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{00}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Whether a responder's header field can go on the wire without splitting the response.
    static func isValid(_ field: (name: String, value: String)) -> Bool {
        var name = field.name
        var value = field.value
        // Scans of the contiguous bytes: the generic UTF8View iteration costs several times more per byte.
        return !name.isEmpty && name.withUTF8 { $0.allSatisfy(ASCII.isTokenByte) }
            && value.withUTF8 { ASCII.areFieldValueBytes($0) }
    }

    private enum ManagedField: Equatable {
        case managed
        case server
        case requestID
        case other
    }

    // The server owns framing and connection management: a responder's Content-Length,
    // Transfer-Encoding, Connection or Date is replaced by the server's own.
    private static func managedField(_ name: String) -> ManagedField {
        // Names compare as `caseInsensitiveEquals` compares them, over the name's bytes taken once.
        var name = name
        return name.withUTF8 { name in
            switch name.count {
            case 4 where ASCII.equalIgnoringASCIICase(name, "Date"): .managed
            case 6 where ASCII.equalIgnoringASCIICase(name, "Server"): .server
            case 10 where ASCII.equalIgnoringASCIICase(name, "Connection"): .managed
            case 10 where ASCII.equalIgnoringASCIICase(name, "Keep-Alive"): .managed
            case 12 where ASCII.equalIgnoringASCIICase(name, "X-Request-ID"): .requestID
            case 14 where ASCII.equalIgnoringASCIICase(name, "Content-Length"): .managed
            case 17 where ASCII.equalIgnoringASCIICase(name, "Transfer-Encoding"): .managed
            default: .other
            }
        }
    }

    private mutating func refreshDateLine() {
        var now = time(nil)
        let second = Int(now)
        guard second != dateSecond else { return }
        dateSecond = second
        var parts = tm()
        gmtime_r(&now, &parts)
        dateLine = Array("Date: \(Self.imfFixdate(parts))\r\n".utf8)
    }

    // RFC 9110 §5.6.7: IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    static func imfFixdate(_ parts: tm) -> String {
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let day = days[Int(parts.tm_wday) % 7]
        let month = months[Int(parts.tm_mon) % 12]
        return "\(day), \(two(parts.tm_mday)) \(month) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }

    /// The reason phrase for a status; empty for unknown ones (RFC 9112 §4 allows that).
    static func reasonPhrase(_ status: Int) -> StaticString {
        switch status {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 206: "Partial Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 303: "See Other"
        case 304: "Not Modified"
        case 307: "Temporary Redirect"
        case 308: "Permanent Redirect"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 410: "Gone"
        case 411: "Length Required"
        case 412: "Precondition Failed"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 417: "Expectation Failed"
        case 422: "Unprocessable Content"
        case 428: "Precondition Required"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: ""
        }
    }
}

/// Writes bytes into memory sized for them beforehand.
private struct ByteCursor {
    private let buffer: UnsafeMutableBufferPointer<UInt8>
    /// How many bytes have been written.
    private(set) var written = 0

    init(_ buffer: UnsafeMutableBufferPointer<UInt8>) { self.buffer = buffer }

    private var rest: UnsafeMutableBufferPointer<UInt8> { UnsafeMutableBufferPointer(rebasing: buffer[written...]) }

    @inline(__always)
    mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        written += rest.initialize(fromContentsOf: bytes)
    }

    @inline(__always)
    mutating func write(_ text: StaticString) {
        write(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    mutating func write(_ bytes: [UInt8]) {
        written += rest.initialize(fromContentsOf: bytes)
    }

    mutating func write(_ tag: EntityTag) {
        written += tag.write(to: rest)
    }

    mutating func write(string text: String) {
        written += rest.initialize(fromContentsOf: text.utf8)
    }

    /// Writes `value` as `String(value)` spells it.
    mutating func writeDecimal(_ value: Int) {
        if value < 0 {
            buffer[written] = UInt8(ascii: "-")
            written += 1
        }
        var rest = value.magnitude
        var index = written + Self.decimalLength(rest)
        written = index
        repeat {
            index -= 1
            buffer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
        } while rest > 0
    }

    /// The bytes `writeDecimal(value)` writes.
    static func decimalLength(_ value: Int) -> Int {
        (value < 0 ? 1 : 0) + decimalLength(value.magnitude)
    }

    private static func decimalLength(_ magnitude: UInt) -> Int {
        var length = 1
        var rest = magnitude
        while rest >= 10 {
            rest /= 10
            length += 1
        }
        return length
    }
}
