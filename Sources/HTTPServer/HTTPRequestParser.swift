import Glibc

/// The limits a request parser enforces.
struct HTTPParserLimits: Sendable, Equatable {
    var maxRequestLineBytes: Int
    var maxHeaderBytes: Int
    var maxHeaderFields: Int
    var maxBodyBytes: Int

    /// A chunk-size line (size plus extensions) longer than this is malformed.
    static let maxChunkLineBytes = 4096
}

/// A request as framed by the parser. The responder's request is built here once and handed on whole (copying
/// its fields from one type to the next would retain and release each); the worker fills in its peer and id.
struct ParsedRequest: Sendable {
    /// Empty `peer` and `requestID`; an empty `body` while the body is still being read.
    var request: HTTPRequest
    /// Whether the client lets the connection stay open after this request (RFC 9112 §9.3).
    var keepAlive: Bool
    /// How the body is framed; what is left of it to read is tracked by the parser's phase.
    var framing: BodyFraming
    /// The head asked for `100 Continue` before its body (only for HTTP/1.1 with a body).
    var expectContinue: Bool
    /// The bytes the request took on the wire: head and body framing.
    var wireBytes = 0

    var isHead: Bool { request.method == "HEAD" }

    /// Sets what the header section said.
    mutating func complete(headers: HTTPHeaders, keepAlive: Bool, framing: BodyFraming, expectContinue: Bool) {
        request.headers = headers
        self.keepAlive = keepAlive
        self.framing = framing
        self.expectContinue = expectContinue
    }
}

/// What the parser has for the caller after the bytes seen so far.
enum HTTPParserEvent: Sendable {
    /// The buffered bytes do not complete anything yet.
    case needMoreBytes
    /// The head asked for `Expect: 100-continue` and no body byte has arrived: send `100 Continue`.
    case sendContinue
    /// A complete request; call `next()` again for any pipelined one behind it.
    case request(ParsedRequest)
    /// The client broke the protocol; the parser stays failed.
    case failure(HTTPProtocolError)
}

/// An incremental HTTP/1.1 request parser (RFC 9112): a value type fed bytes as they arrive.
struct HTTPRequestParser: Sendable {
    let limits: HTTPParserLimits
    private var buffer: [UInt8] = []
    private var start = 0
    private var phase = Phase.head(HeadScan())
    private var leadingEmptyLineBytes = 0

    private struct HeadScan: Sendable {
        var scanned = 0
        var lineStart = 0
        var requestLineEnd: Int?
        var fieldLines = 0
    }

    private enum Phase: Sendable {
        case head(HeadScan)
        case fixedBody(ParsedRequest, length: Int)
        case chunked(ParsedRequest, ChunkedBody)
        case failed(HTTPProtocolError)
    }

    init(limits: HTTPParserLimits) { self.limits = limits }

    /// Bytes received and not yet consumed by a returned request.
    var bufferedByteCount: Int { buffer.count - start }

    /// The bytes of memory the parser holds for its connection: the receive buffer and a chunked body so far.
    var heldBytes: Int {
        guard case .chunked(_, let body) = phase else { return buffer.capacity }
        return buffer.capacity + body.body.capacity
    }

    /// Whether the parser is before or inside a request's header section.
    var isReadingHead: Bool {
        if case .head = phase { return true }
        return false
    }

    /// Whether part of a request has arrived and the request is not complete yet.
    var isMidRequest: Bool {
        switch phase {
        case .head: bufferedByteCount > 0
        case .fixedBody, .chunked: true
        case .failed: false
        }
    }

    /// Whether more than one empty line has arrived since the last request: a head has begun for the header
    /// timeout although nothing stays buffered (the lines are consumed as they arrive).
    var hasExtraLeadingEmptyLines: Bool { leadingEmptyLineBytes > 2 }

    /// Adds received bytes.
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes.
    mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next event the buffered bytes allow.
    mutating func next() -> HTTPParserEvent {
        // Between requests with nothing buffered, as after every response: nothing to scan, nothing to compact.
        if bufferedByteCount == 0, isReadingHead { return .needMoreBytes }
        let event = step()
        compact()
        return event
    }

    private mutating func compact() {
        if start == buffer.count {
            // Keep a small buffer's capacity for the next request; give a big one back.
            buffer.removeAll(keepingCapacity: buffer.capacity <= 16 * 1024)
            start = 0
        } else if start > 0 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    private mutating func fail(_ error: HTTPProtocolError) -> HTTPParserEvent {
        phase = .failed(error)
        return .failure(error)
    }

    private mutating func step() -> HTTPParserEvent {
        switch phase {
        case .failed(let error):
            return .failure(error)
        case .head(let scan):
            return scanHead(scan)
        case .fixedBody(let head, let length):
            return readFixedBody(head, length: length)
        case .chunked(let head, let body):
            return readChunked(head, body)
        }
    }

    // MARK: Head

    private mutating func scanHead(_ initial: HeadScan) -> HTTPParserEvent {
        var scan = initial
        while true {
            let available = buffer.count - start
            guard let lfOffset = findLF(from: start + scan.scanned).map({ $0 - start }) else {
                scan.scanned = available
                if let requestLineEnd = scan.requestLineEnd {
                    if available - requestLineEnd > limits.maxHeaderBytes { return fail(.headerSectionTooLarge) }
                } else if available - scan.lineStart - 1 > limits.maxRequestLineBytes {
                    return fail(.requestLineTooLong)
                }
                phase = .head(scan)
                return .needMoreBytes
            }
            // RFC 9112 §2.2: a bare CR or LF is not a line terminator we accept; rejecting it avoids
            // disagreeing with intermediaries about where a line ends.
            guard lfOffset > scan.lineStart, buffer[start + lfOffset - 1] == ASCII.cr else {
                return fail(.invalidLineEnding)
            }
            let lineLength = lfOffset - 1 - scan.lineStart
            if let requestLineEnd = scan.requestLineEnd {
                if lfOffset + 1 - requestLineEnd > limits.maxHeaderBytes { return fail(.headerSectionTooLarge) }
                if lineLength == 0 {
                    return finishHead(length: lfOffset + 1, requestLineEnd: requestLineEnd, fieldLines: scan.fieldLines)
                }
                scan.fieldLines += 1
                if scan.fieldLines > limits.maxHeaderFields { return fail(.tooManyHeaderFields) }
            } else if lineLength == 0 {
                // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
                leadingEmptyLineBytes += lfOffset + 1
                if leadingEmptyLineBytes > limits.maxRequestLineBytes { return fail(.malformedRequestLine) }
                start += lfOffset + 1
                scan = HeadScan()
                continue
            } else {
                if lineLength > limits.maxRequestLineBytes { return fail(.requestLineTooLong) }
                scan.requestLineEnd = lfOffset + 1
            }
            scan.lineStart = lfOffset + 1
            scan.scanned = lfOffset + 1
        }
    }

    private func findLF(from index: Int) -> Int? {
        guard index < buffer.count else { return nil }
        return buffer.withUnsafeBufferPointer { all -> Int? in
            guard let base = all.baseAddress else { return nil }
            guard let found = memchr(base + index, Int32(ASCII.lf), all.count - index) else { return nil }
            return UnsafeRawPointer(found) - UnsafeRawPointer(base)
        }
    }

    private mutating func finishHead(length: Int, requestLineEnd: Int, fieldLines: Int) -> HTTPParserEvent {
        let headStart = start
        start += length
        leadingEmptyLineBytes = 0
        var head: ParsedRequest
        do {
            head = try buffer.withUnsafeBufferPointer { all throws(HTTPProtocolError) in
                try HeadParser.parse(
                    UnsafeBufferPointer(rebasing: all[headStart..<(headStart + length)]),
                    requestLineEnd: requestLineEnd, fieldLines: fieldLines, limits: limits
                )
            }
        } catch {
            return fail(error)
        }
        head.wireBytes = length
        switch head.framing {
        case .none:
            phase = .head(HeadScan())
            return .request(head)
        case .length(let length):
            phase = .fixedBody(head, length: length)
        case .chunked:
            phase = .chunked(head, ChunkedBody())
        }
        // RFC 9110 §10.1.1: send 100 Continue only if the body has not started arriving.
        if head.expectContinue && bufferedByteCount == 0 { return .sendContinue }
        return step()
    }

    // MARK: Body

    private mutating func readFixedBody(_ head: ParsedRequest, length: Int) -> HTTPParserEvent {
        guard bufferedByteCount >= length else {
            phase = .fixedBody(head, length: length)
            return .needMoreBytes
        }
        let body = Array(buffer[start..<(start + length)])
        start += length
        phase = .head(HeadScan())
        var complete = head
        complete.wireBytes += length
        complete.request.body = body
        return .request(complete)
    }

    private struct ChunkedBody: Sendable {
        enum Step: Sendable {
            case size
            case data(remaining: Int)
            case dataEnd
            case trailer
        }
        var step = Step.size
        var body: [UInt8] = []
        var overheadBytes = 0
        var trailerFields = 0
        var trailerBytes = 0
    }

    // RFC 9112 §7.1: chunked-body = *chunk last-chunk trailer-section CRLF.
    private mutating func readChunked(_ head: ParsedRequest, _ initial: ChunkedBody) -> HTTPParserEvent {
        var chunked = initial
        while true {
            switch chunked.step {
            case .size:
                guard let lf = findLF(from: start) else {
                    if bufferedByteCount > HTTPParserLimits.maxChunkLineBytes { return fail(.malformedChunk) }
                    phase = .chunked(head, chunked)
                    return .needMoreBytes
                }
                let lineLength = lf + 1 - start
                guard lineLength <= HTTPParserLimits.maxChunkLineBytes else { return fail(.malformedChunk) }
                let size = buffer.withUnsafeBufferPointer { all in
                    Self.parseChunkSize(UnsafeBufferPointer(rebasing: all[start..<(lf + 1)]))
                }
                start = lf + 1
                chunked.overheadBytes += lineLength
                switch size {
                case .malformed:
                    return fail(.malformedChunk)
                case .tooLarge:
                    return fail(.bodyTooLarge)
                case .size(let size):
                    guard size <= limits.maxBodyBytes - chunked.body.count else { return fail(.bodyTooLarge) }
                    chunked.step = size == 0 ? .trailer : .data(remaining: size)
                }
            case .data(let remaining):
                let take = min(remaining, bufferedByteCount)
                guard take > 0 else {
                    phase = .chunked(head, chunked)
                    return .needMoreBytes
                }
                chunked.body.append(contentsOf: buffer[start..<(start + take)])
                start += take
                chunked.step = remaining == take ? .dataEnd : .data(remaining: remaining - take)
            case .dataEnd:
                guard bufferedByteCount >= 2 else {
                    phase = .chunked(head, chunked)
                    return .needMoreBytes
                }
                guard buffer[start] == ASCII.cr, buffer[start + 1] == ASCII.lf else { return fail(.malformedChunk) }
                start += 2
                chunked.overheadBytes += 2
                chunked.step = .size
            case .trailer:
                // RFC 9110 §6.5.1: trailer fields get the header section's limits; the whole section counts,
                // as lines that arrive complete in one read are never seen unterminated.
                guard let lf = findLF(from: start) else {
                    if chunked.trailerBytes + bufferedByteCount > limits.maxHeaderBytes {
                        return fail(.headerSectionTooLarge)
                    }
                    phase = .chunked(head, chunked)
                    return .needMoreBytes
                }
                guard lf > start, buffer[lf - 1] == ASCII.cr else { return fail(.malformedChunk) }
                let lineLength = lf + 1 - start
                chunked.trailerBytes += lineLength
                if chunked.trailerBytes > limits.maxHeaderBytes { return fail(.headerSectionTooLarge) }
                let isValidField = buffer.withUnsafeBufferPointer { all in
                    Self.isTrailerField(UnsafeBufferPointer(rebasing: all[start..<(lf - 1)]))
                }
                start = lf + 1
                chunked.overheadBytes += lineLength
                if lineLength == 2 {
                    phase = .head(HeadScan())
                    var complete = head
                    complete.wireBytes += chunked.overheadBytes + chunked.body.count
                    complete.request.body = chunked.body
                    return .request(complete)
                }
                // RFC 9112 §7.1.2: trailer fields may be discarded; they are only checked for shape.
                guard isValidField else { return fail(.malformedChunk) }
                chunked.trailerFields += 1
                if chunked.trailerFields > limits.maxHeaderFields { return fail(.tooManyHeaderFields) }
            }
            // Framing overhead is bounded too, so tiny chunks with long extensions cannot spin forever.
            if chunked.overheadBytes > max(limits.maxBodyBytes, 64 * 1024) { return fail(.bodyTooLarge) }
        }
    }

    private enum ChunkSize {
        case size(Int)
        case tooLarge
        case malformed
    }

    // RFC 9112 §7.1.1: chunk-size [ chunk-ext ] CRLF, chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ).
    private static func parseChunkSize(_ line: UnsafeBufferPointer<UInt8>) -> ChunkSize {
        let end = line.count - 2
        guard end >= 1, line[end] == ASCII.cr else { return .malformed }
        var index = 0
        var size = 0
        var tooLarge = false
        while index < end, let digit = ASCII.hexValue(line[index]) {
            if size > (Int.max >> 4) { tooLarge = true } else { size = size << 4 | digit }
            index += 1
        }
        guard index > 0 else { return .malformed }
        guard isChunkExtensions(UnsafeBufferPointer(rebasing: line[index..<end])) else { return .malformed }
        return tooLarge ? .tooLarge : .size(size)
    }

    // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), name a token,
    // value a token or quoted-string. Extensions are ignored, but only once they parse: a line that one
    // parser reads loosely and another strictly is where request smuggling starts.
    private static func isChunkExtensions(_ ext: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        func skipWhitespace(_ at: inout Int) {
            while at < ext.count, ext[at] == ASCII.space || ext[at] == ASCII.tab { at += 1 }
        }
        func skipToken(_ at: inout Int) -> Bool {
            let tokenStart = at
            while at < ext.count, ASCII.isTokenByte(ext[at]) { at += 1 }
            return at > tokenStart
        }
        while index < ext.count {
            skipWhitespace(&index)
            guard index < ext.count, ext[index] == ASCII.semicolon else { return false }
            index += 1
            skipWhitespace(&index)
            guard skipToken(&index) else { return false }
            var afterName = index
            skipWhitespace(&afterName)
            guard afterName < ext.count, ext[afterName] == UInt8(ascii: "=") else { continue }
            index = afterName + 1
            skipWhitespace(&index)
            guard index < ext.count else { return false }
            if ext[index] != UInt8(ascii: "\"") {
                guard skipToken(&index) else { return false }
                continue
            }
            // RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE.
            index += 1
            var closed = false
            while index < ext.count {
                let byte = ext[index]
                if byte == UInt8(ascii: "\"") {
                    index += 1
                    closed = true
                    break
                }
                if byte == UInt8(ascii: "\\") {
                    index += 1
                    guard index < ext.count else { return false }
                }
                guard ASCII.isFieldValueByte(ext[index]) else { return false }
                index += 1
            }
            guard closed else { return false }
        }
        return true
    }

    private static func isTrailerField(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let colon = line.firstIndex(of: ASCII.colon), colon > 0 else { return false }
        for byte in line[0..<colon] where !ASCII.isTokenByte(byte) { return false }
        for byte in line[(colon + 1)...] where !ASCII.isFieldValueByte(byte) { return false }
        return true
    }
}

/// How the length of a request body is known (RFC 9112 §6.3).
enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int)
    case chunked
}

/// Parses one complete head (request line, field lines, empty line) with every strictness rule.
enum HeadParser {
    static func parse(
        _ head: UnsafeBufferPointer<UInt8>, requestLineEnd: Int, fieldLines: Int, limits: HTTPParserLimits
    ) throws(HTTPProtocolError) -> ParsedRequest {
        // Made around the request line's request and completed by one mutating call: the optimizer then returns it
        // by moving it, where completing it field by field here, or making it from a local request at the end,
        // copied the request (a retain and a release per field).
        var parsed = ParsedRequest(
            request: try parseRequestLine(UnsafeBufferPointer(rebasing: head[0..<(requestLineEnd - 2)])),
            keepAlive: false, framing: .none, expectContinue: false
        )

        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(fieldLines)
        var hostCount = 0
        var contentLength: ContentLength?
        var transferCodings: [String]?
        var chunkedHasParameters = false
        var connectionClose = false
        var connectionKeepAlive = false
        var expectContinue = false
        var unsupportedExpectation = false

        var lineStart = requestLineEnd
        while lineStart < head.count - 2 {
            // The head ends with its empty line's LF, so there is always one to find.
            let lineEnd = ASCII.firstIndex(of: ASCII.lf, in: head, from: lineStart) ?? (head.count - 1)
            let line = UnsafeBufferPointer(rebasing: head[lineStart..<(lineEnd - 1)])
            lineStart = lineEnd + 1

            let field = try parseFieldLine(line)
            let value = field.value
            switch KnownField(name: field.name) {
            case .host:
                hostCount += 1
                // RFC 9112 §3.2: 400 for a Host field with an invalid value too.
                if !value.allSatisfy(ASCII.isHostByte) { throw .invalidHost }
            case .contentLength:
                switch (contentLength, ContentLength(value)) {
                case (_, .invalid): throw .invalidContentLength
                case (_, .conflicting): throw .conflictingContentLength
                case (nil, let parsed): contentLength = parsed
                case (let previous?, let parsed) where previous != parsed:
                    throw .conflictingContentLength
                default: break
                }
            case .transferEncoding:
                var codings = transferCodings ?? []
                for element in ASCII.listElements(value) {
                    // Parameters (";q=…") belong to the coding name before them.
                    let name = element.prefix { $0 != ASCII.semicolon }
                    let trimmedName = ASCII.trimmed(name)
                    // RFC 9112 §7, RFC 9110 §5.6.2: coding names are ASCII tokens, compared case-insensitively.
                    // Unicode lowercasing read "chun\u{212A}ed" (KELVIN SIGN) as chunked, where other parsers
                    // see an unknown coding and frame the body differently.
                    let coding = ASCII.equalsLowercase(trimmedName, "chunked")
                        ? "chunked" : String(decoding: trimmedName, as: UTF8.self)
                    if coding == "chunked" && name.count < element.count { chunkedHasParameters = true }
                    codings.append(coding)
                }
                transferCodings = codings
            case .connection:
                for element in ASCII.listElements(value) {
                    if ASCII.equalsLowercase(element, "close") { connectionClose = true }
                    if ASCII.equalsLowercase(element, "keep-alive") { connectionKeepAlive = true }
                }
            case .expect:
                // RFC 9110 §10.1.1, §5.6.1: Expect is a list; its empty elements are ignored.
                for element in ASCII.listElements(value) {
                    if ASCII.equalsLowercase(element, "100-continue") {
                        expectContinue = true
                    } else {
                        unsupportedExpectation = true
                    }
                }
            case .other:
                break
            }
            headers.append((fieldName(field.name), String(decoding: value, as: UTF8.self)))
        }

        let version = parsed.request.version
        // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host and for any request with several.
        if hostCount > 1 || (version == .http11 && hostCount == 0) { throw .invalidHost }

        var framing = BodyFraming.none
        if let codings = transferCodings {
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            if version == .http10 { throw .invalidTransferEncoding }
            // RFC 9112 §6.1 and §6.3 rule 3: both framings at once is a smuggling vector; reject.
            if contentLength != nil { throw .contentLengthWithTransferEncoding }
            if codings.isEmpty || codings.contains("") { throw .invalidTransferEncoding }
            // RFC 9112 §6.3 rule 4: chunked not the final coding of a request is 400, whatever the others are.
            if codings.last != "chunked" { throw .invalidTransferEncoding }
            // RFC 9112 §7.1: chunked defines no parameters; "chunked;x=y" is not the chunked coding to a
            // parser that compares the whole element (llhttp, many proxies), which would frame the body
            // differently, so it is 400 rather than read as chunked.
            if chunkedHasParameters { throw .invalidTransferEncoding }
            // RFC 9112 §6.1: a transfer coding the server does not understand gets 501.
            if codings.contains(where: { $0 != "chunked" }) { throw .unsupportedTransferEncoding }
            // RFC 9112 §6.1: chunked must not be applied more than once.
            if codings.count > 1 { throw .invalidTransferEncoding }
            framing = .chunked
        } else if let contentLength {
            switch contentLength {
            case .invalid: throw .invalidContentLength
            case .conflicting: throw .conflictingContentLength
            case .tooLarge: throw .bodyTooLarge
            case .value(let length):
                if length > limits.maxBodyBytes { throw .bodyTooLarge }
                framing = length > 0 ? .length(length) : .none
            }
        }

        // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
        if version == .http11 && unsupportedExpectation { throw .unsupportedExpectation }
        let keepAlive: Bool
        switch version {
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        case .http11: keepAlive = !connectionClose
        case .http10: keepAlive = connectionKeepAlive && !connectionClose
        }
        parsed.complete(
            headers: HTTPHeaders(headers), keepAlive: keepAlive, framing: framing,
            expectContinue: version == .http11 && expectContinue && framing != .none
        )
        return parsed
    }

    // RFC 9112 §3: request-line = method SP request-target SP HTTP-version.
    /// The request the line describes, without headers, body, peer or id yet.
    static func parseRequestLine(_ line: UnsafeBufferPointer<UInt8>) throws(HTTPProtocolError) -> HTTPRequest {
        var index = 0
        while index < line.count, line[index] != ASCII.space {
            guard ASCII.isTokenByte(line[index]) else { throw .invalidMethod }
            index += 1
        }
        guard index > 0, index < line.count else { throw .malformedRequestLine }
        let method = UnsafeBufferPointer(rebasing: line[0..<index])
        index += 1
        let targetStart = index
        let space = ASCII.firstIndex(of: ASCII.space, in: line, from: targetStart)
        index = space ?? line.count
        // RFC 9112 §3.2: the target has no whitespace or control characters.
        for byte in line[targetStart..<index] where byte <= 0x20 || byte >= 0x7F { throw .invalidTarget }
        guard index > targetStart, space != nil else { throw .malformedRequestLine }
        let target = UnsafeBufferPointer(rebasing: line[targetStart..<index])
        let versionBytes = UnsafeBufferPointer(rebasing: line[(index + 1)...])

        // RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
        guard versionBytes.count == 8, ASCII.equals(UnsafeBufferPointer(rebasing: versionBytes[0..<5]), "HTTP/"),
            ASCII.isDigit(versionBytes[5]), versionBytes[6] == ASCII.dot, ASCII.isDigit(versionBytes[7])
        else { throw .malformedRequestLine }
        let version: HTTPVersion
        switch (versionBytes[5], versionBytes[7]) {
        case (UInt8(ascii: "1"), UInt8(ascii: "0")): version = .http10
        // RFC 9110 §6.2: a higher minor version of a major version we implement is handled as our highest, 1.1.
        case (UInt8(ascii: "1"), _): version = .http11
        default: throw .unsupportedVersion
        }

        guard let parts = parseTarget(target, method: method) else { throw .invalidTarget }
        let targetText = String(decoding: target, as: UTF8.self)
        let rawPath: String
        let path: String
        if let range = parts.rawPath {
            let rawBytes = UnsafeBufferPointer(rebasing: target[range])
            // Most targets are a bare path without escapes: target, raw path and path then share one string.
            rawPath = rawBytes.count == target.count ? targetText : String(decoding: rawBytes, as: UTF8.self)
            if ASCII.firstIndex(of: UInt8(ascii: "%"), in: rawBytes) != nil {
                guard let decoded = percentDecoded(rawBytes) else { throw .invalidTarget }
                path = decoded
            } else {
                path = rawPath
            }
        } else {
            rawPath = "/"
            path = "/"
        }
        return HTTPRequest(
            method: methodName(method), target: targetText, path: path, rawPath: rawPath,
            query: parts.query.isEmpty ? "" : String(decoding: target[parts.query], as: UTF8.self), version: version,
            peer: "", requestID: ""
        )
    }

    /// The method as a string; the common ones are string literals, which need no decoding.
    static func methodName(_ method: UnsafeBufferPointer<UInt8>) -> String {
        // RFC 9110 §9.1: methods are case-sensitive, so only these exact spellings are the literals.
        switch method.count {
        case 3 where ASCII.equals(method, "GET"): "GET"
        case 3 where ASCII.equals(method, "PUT"): "PUT"
        case 4 where ASCII.equals(method, "HEAD"): "HEAD"
        case 4 where ASCII.equals(method, "POST"): "POST"
        case 5 where ASCII.equals(method, "PATCH"): "PATCH"
        case 6 where ASCII.equals(method, "DELETE"): "DELETE"
        case 7 where ASCII.equals(method, "OPTIONS"): "OPTIONS"
        default: String(decoding: method, as: UTF8.self)
        }
    }

    /// A field name as a string; common spellings are string literals, which need no decoding. Names keep
    /// the case they arrived in, so only exact spellings are the literals.
    static func fieldName(_ name: UnsafeBufferPointer<UInt8>) -> String {
        switch name.count {
        case 4 where ASCII.equals(name, "Host"): "Host"
        case 4 where ASCII.equals(name, "host"): "host"
        case 6 where ASCII.equals(name, "Accept"): "Accept"
        case 6 where ASCII.equals(name, "accept"): "accept"
        case 6 where ASCII.equals(name, "Expect"): "Expect"
        case 10 where ASCII.equals(name, "User-Agent"): "User-Agent"
        case 10 where ASCII.equals(name, "user-agent"): "user-agent"
        case 10 where ASCII.equals(name, "Connection"): "Connection"
        case 10 where ASCII.equals(name, "connection"): "connection"
        case 12 where ASCII.equals(name, "Content-Type"): "Content-Type"
        case 12 where ASCII.equals(name, "content-type"): "content-type"
        case 12 where ASCII.equals(name, "X-Request-ID"): "X-Request-ID"
        case 12 where ASCII.equals(name, "x-request-id"): "x-request-id"
        case 13 where ASCII.equals(name, "Authorization"): "Authorization"
        case 13 where ASCII.equals(name, "authorization"): "authorization"
        case 14 where ASCII.equals(name, "Content-Length"): "Content-Length"
        case 14 where ASCII.equals(name, "content-length"): "content-length"
        case 15 where ASCII.equals(name, "Accept-Encoding"): "Accept-Encoding"
        case 15 where ASCII.equals(name, "accept-encoding"): "accept-encoding"
        case 15 where ASCII.equals(name, "X-Forwarded-For"): "X-Forwarded-For"
        case 15 where ASCII.equals(name, "x-forwarded-for"): "x-forwarded-for"
        case 17 where ASCII.equals(name, "Transfer-Encoding"): "Transfer-Encoding"
        case 17 where ASCII.equals(name, "transfer-encoding"): "transfer-encoding"
        default: String(decoding: name, as: UTF8.self)
        }
    }

    /// Where the path and query sit in a request target; a nil path means "/".
    struct TargetParts: Equatable {
        var rawPath: Range<Int>?
        var query: Range<Int>
    }

    // RFC 9112 §3.2: origin-form, absolute-form (which a server MUST accept), asterisk-form for OPTIONS.
    static func parseTarget(_ target: UnsafeBufferPointer<UInt8>, method: UnsafeBufferPointer<UInt8>) -> TargetParts? {
        if ASCII.firstIndex(of: UInt8(ascii: "#"), in: target) != nil { return nil }
        let end = target.count
        if end == 1, target[0] == UInt8(ascii: "*") {
            return method.elementsEqual("OPTIONS".utf8) ? TargetParts(rawPath: 0..<1, query: end..<end) : nil
        }
        var pathStart = 0
        if target[0] != ASCII.slash {
            guard let schemeLength = absoluteSchemeLength(target) else { return nil }
            pathStart = schemeLength
            while pathStart < end, target[pathStart] != ASCII.slash, target[pathStart] != ASCII.question {
                // RFC 9110 §4.2.4: userinfo ("@") in an http(s) target is an error; RFC 3986 §3.2.2: the
                // authority is otherwise host bytes and a port, as the Host field is.
                guard ASCII.isHostByte(target[pathStart]) else { return nil }
                pathStart += 1
            }
            guard pathStart > schemeLength else { return nil }
        }
        let question = ASCII.firstIndex(of: ASCII.question, in: target, from: pathStart)
        let pathEnd = question ?? end
        let query = question.map { ($0 + 1)..<end } ?? end..<end
        // An absolute-form target with an empty path means "/" (RFC 9110 §4.2.3).
        return TargetParts(rawPath: pathEnd > pathStart ? pathStart..<pathEnd : nil, query: query)
    }

    private static func absoluteSchemeLength(_ target: UnsafeBufferPointer<UInt8>) -> Int? {
        let schemes: [StaticString] = ["http://", "https://"]
        for scheme in schemes where target.count > scheme.utf8CodeUnitCount {
            let prefix = UnsafeBufferPointer(rebasing: target[0..<scheme.utf8CodeUnitCount])
            if ASCII.equalsLowercase(prefix, scheme) { return scheme.utf8CodeUnitCount }
        }
        return nil
    }

    /// The percent-decoded path, or nil for a malformed escape.
    static func percentDecoded(_ raw: UnsafeBufferPointer<UInt8>) -> String? {
        guard ASCII.firstIndex(of: UInt8(ascii: "%"), in: raw) != nil else { return String(decoding: raw, as: UTF8.self) }
        var decoded: [UInt8] = []
        decoded.reserveCapacity(raw.count)
        var index = 0
        while index < raw.count {
            if raw[index] == UInt8(ascii: "%") {
                guard index + 2 < raw.count, let high = ASCII.hexValue(raw[index + 1]),
                    let low = ASCII.hexValue(raw[index + 2])
                else { return nil }
                decoded.append(UInt8(high << 4 | low))
                index += 3
            } else {
                decoded.append(raw[index])
                index += 1
            }
        }
        return String(decoding: decoded, as: UTF8.self)
    }

    // RFC 9112 §5: field-line = field-name ":" OWS field-value OWS.
    static func parseFieldLine(
        _ line: UnsafeBufferPointer<UInt8>
    ) throws(HTTPProtocolError) -> (name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        guard let first = line.first else { throw .invalidHeaderName }
        // RFC 9112 §5.2: obs-fold may be rejected with 400; §2.2: so may whitespace before the first field.
        if first == ASCII.space || first == ASCII.tab { throw .obsoleteLineFolding }
        var index = 0
        while index < line.count, ASCII.isTokenByte(line[index]) { index += 1 }
        // The first byte that is not a token byte must be the colon, after at least one name byte.
        guard index < line.count else { throw .invalidHeaderName }
        switch line[index] {
        case ASCII.colon where index > 0:
            break
        case ASCII.space, ASCII.tab:
            // RFC 9112 §5.1: whitespace between field name and colon MUST be rejected with 400.
            throw ASCII.firstIndex(of: ASCII.colon, in: line, from: index) != nil
                ? .whitespaceBeforeColon : .invalidHeaderName
        default:
            throw .invalidHeaderName
        }
        let name = UnsafeBufferPointer(rebasing: line[0..<index])
        let rawValue = UnsafeBufferPointer(rebasing: line[(index + 1)...])
        // RFC 9110 §5.5: field values never hold NUL, CR, LF or other controls except HTAB.
        guard ASCII.areFieldValueBytes(rawValue) else { throw .invalidHeaderValue }
        return (name, ASCII.trimmed(rawValue))
    }

    enum KnownField {
        case host, contentLength, transferEncoding, connection, expect, other

        init(name: UnsafeBufferPointer<UInt8>) {
            switch name.count {
            case 4 where ASCII.equalsLowercase(name, "host"): self = .host
            case 6 where ASCII.equalsLowercase(name, "expect"): self = .expect
            case 10 where ASCII.equalsLowercase(name, "connection"): self = .connection
            case 14 where ASCII.equalsLowercase(name, "content-length"): self = .contentLength
            case 17 where ASCII.equalsLowercase(name, "transfer-encoding"): self = .transferEncoding
            default: self = .other
            }
        }
    }

    enum ContentLength: Equatable {
        case value(Int)
        case tooLarge
        case invalid
        case conflicting

        // RFC 9110 §8.6: Content-Length = 1*DIGIT; a list of identical values may be accepted as one.
        init(_ value: UnsafeBufferPointer<UInt8>) {
            var result: ContentLength?
            for element in value.split(separator: ASCII.comma, omittingEmptySubsequences: false) {
                let digits = ASCII.trimmed(UnsafeBufferPointer(rebasing: element))
                guard !digits.isEmpty, digits.allSatisfy(ASCII.isDigit) else {
                    self = .invalid
                    return
                }
                var number = 0
                var overflow = false
                for digit in digits {
                    let (times, o1) = number.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(Int(digit - ASCII.zero))
                    overflow = overflow || o1 || o2
                    number = sum
                }
                let parsed: ContentLength = overflow ? .tooLarge : .value(number)
                if let result, result != parsed {
                    self = .conflicting
                    return
                }
                result = parsed
            }
            self = result ?? .invalid
        }
    }
}

/// Byte classes from RFC 9110 §5.6.2 and RFC 5234.
enum ASCII {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let space = UInt8(ascii: " ")
    static let tab = UInt8(ascii: "\t")
    static let colon = UInt8(ascii: ":")
    static let semicolon = UInt8(ascii: ";")
    static let comma = UInt8(ascii: ",")
    static let slash = UInt8(ascii: "/")
    static let question = UInt8(ascii: "?")
    static let dot = UInt8(ascii: ".")
    static let zero = UInt8(ascii: "0")

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: Int(byte - 0x30)
        case 0x41...0x46: Int(byte - 0x41 + 10)
        case 0x61...0x66: Int(byte - 0x61 + 10)
        default: nil
        }
    }

    // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: true
        default: false
        }
    }

    // RFC 9110 §7.2: Host = uri-host [ ":" port ]; RFC 3986 §3.2.2: unreserved, pct-encoded, sub-delims,
    // and ":", "[", "]" for an IP literal and the port. No "@" (userinfo), "/", "?", "#", space or obs-text.
    static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"): true
        case UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("),
            UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"),
            UInt8(ascii: "="):
            true
        case UInt8(ascii: ":"), UInt8(ascii: "["), UInt8(ascii: "]"): true
        default: false
        }
    }

    // field-content bytes: VCHAR, obs-text, SP and HTAB.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte == tab || (byte >= 0x20 && byte != 0x7F)
    }

    /// Whether every byte is a field-content byte, as `isFieldValueByte`; eight bytes are cleared at once
    /// while none of them is a control byte (HTAB counts as one here and sends its eight to the exact test).
    static func areFieldValueBytes(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        if let base = UnsafeRawPointer(bytes.baseAddress) {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highBits: UInt64 = 0x8080_8080_8080_8080
            while index + 8 <= bytes.count {
                let word = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                // Exact tests for "some byte is below 0x20" and "some byte is 0x7F" (a borrow only ever
                // starts at a byte that already makes the answer true).
                let below0x20 = (word &- 0x20 &* ones) & ~word & highBits
                let deleteBytesZeroed = word ^ (0x7F &* ones)
                let delete = (deleteBytesZeroed &- ones) & ~deleteBytesZeroed & highBits
                if below0x20 | delete != 0 { break }
                index += 8
            }
        }
        for byte in bytes[index...] where !isFieldValueByte(byte) { return false }
        return true
    }

    static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var lower = bytes.startIndex
        var upper = bytes.endIndex
        while lower < upper, bytes[lower] == space || bytes[lower] == tab { lower += 1 }
        while upper > lower, bytes[upper - 1] == space || bytes[upper - 1] == tab { upper -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[lower..<upper])
    }

    static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UnsafeBufferPointer<UInt8> {
        trimmed(UnsafeBufferPointer(rebasing: bytes))
    }

    /// The non-empty, trimmed elements of a comma-separated list (RFC 9110 §5.6.1).
    static func listElements(_ value: UnsafeBufferPointer<UInt8>) -> [UnsafeBufferPointer<UInt8>] {
        value.split(separator: comma).map { trimmed($0) }.filter { !$0.isEmpty }
    }

    /// Whether `bytes` are exactly `text`.
    static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
        guard bytes.count == text.utf8CodeUnitCount else { return false }
        guard let base = bytes.baseAddress else { return true }
        return memcmp(base, text.utf8Start, bytes.count) == 0
    }

    /// The index of the first `byte` in `bytes` at or after `start` (memchr, faster than a Swift loop).
    static func firstIndex(of byte: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from start: Int = 0) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress,
            let found = memchr(base + start, Int32(byte), bytes.count - start)
        else { return nil }
        return UnsafeRawPointer(found) - UnsafeRawPointer(base)
    }

    /// Whether the bytes are equal with ASCII letters' case ignored: the rule of `String.caseInsensitiveEquals`.
    static func equalIgnoringASCIICase(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        for index in 0..<a.count where a[index] != b[index] {
            // Bit 0x20 tells only a letter's cases apart: '^' and '~', '@' and '`' differ by it too.
            let folded = a[index] | 0x20
            guard folded == b[index] | 0x20, folded >= 0x61, folded <= 0x7A else { return false }
        }
        return true
    }

    /// Whether the bytes equal `text` with ASCII letters' case ignored, as `equalIgnoringASCIICase(_:_:)`.
    static func equalIgnoringASCIICase(_ bytes: UnsafeBufferPointer<UInt8>, _ text: StaticString) -> Bool {
        equalIgnoringASCIICase(bytes, UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    static func equalsLowercase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for (byte, want) in zip(bytes, expected) {
            let lowered = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            if lowered != want { return false }
        }
        return true
    }
}
