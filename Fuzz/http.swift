// libFuzzer target `http` (scripts/fuzz): HTTPRequestParser, compiled into one module with the parser's sources.
// Input: byte 0 picks the limits, byte 1 (mod 16) how many of the next bytes are chunk sizes (each 1...256); the
// rest is what a client sends, fed in those chunks, whole, and byte by byte. Besides traps, it fails when the three
// feedings disagree or a request breaks a cheap invariant (body length against Content-Length, wire bytes against
// consumed bytes, limits, token and field-value bytes, a failed parser that does not stay failed).
import Glibc

private let presets: [HTTPParserLimits] = [
    HTTPParserLimits(maxRequestLineBytes: 8 * 1024, maxHeaderBytes: 64 * 1024, maxHeaderFields: 100, maxBodyBytes: 1024 * 1024),
    HTTPParserLimits(maxRequestLineBytes: 64, maxHeaderBytes: 128, maxHeaderFields: 4, maxBodyBytes: 32),
    HTTPParserLimits(maxRequestLineBytes: 16, maxHeaderBytes: 0, maxHeaderFields: 0, maxBodyBytes: 0),
    HTTPParserLimits(maxRequestLineBytes: Int.max, maxHeaderBytes: Int.max, maxHeaderFields: Int.max, maxBodyBytes: Int.max),
]

private struct Summary: Equatable {
    var method: String, target: String, path: String, rawPath: String, query: String
    var version: HTTPVersion, headers: [String], body: [UInt8], keepAlive: Bool, framing: BodyFraming, wire: Int
}

private func fail(_ message: String) -> Never {
    _ = "INVARIANT: \(message)\n".withCString { write(2, $0, strlen($0)) }
    abort()
}

/// Feeds `chunks`, checking per-event invariants; returns requests and the final failure, if any.
private func run(_ chunks: [ArraySlice<UInt8>], limits: HTTPParserLimits) -> ([Summary], HTTPProtocolError?) {
    var parser = HTTPRequestParser(limits: limits)
    var fed = 0
    var wireTotal = 0
    var out: [Summary] = []
    for chunk in chunks {
        parser.append(chunk)
        fed += chunk.count
        while true {
            let before = parser.bufferedByteCount
            let event = parser.next()
            let buffered = parser.bufferedByteCount
            if buffered < 0 || buffered > before { fail("buffered grew \(before) -> \(buffered)") }
            switch event {
            case .needMoreBytes, .sendContinue:
                break
            case .failure(let error):
                if case .failure(let again) = parser.next(), again == error {} else { fail("failed parser did not stay failed") }
                return (out, error)
            case .request(let parsed):
                let r = parsed.request
                wireTotal += parsed.wireBytes
                if wireTotal > fed - buffered { fail("wire bytes \(wireTotal) exceed consumed \(fed - buffered)") }
                if r.body.count > limits.maxBodyBytes { fail("body \(r.body.count) over limit") }
                let lengths = r.headers.values("Content-Length")
                switch parsed.framing {
                case .none:
                    if !r.body.isEmpty { fail("body without framing") }
                case .length(let n):
                    if r.body.count != n { fail("body \(r.body.count) != framing \(n)") }
                    for value in lengths {
                        for element in value.split(separator: ",") {
                            let digits = element.trimmingSpaces
                            if let declared = Int(digits), declared != n { fail("Content-Length \(declared) != \(n)") }
                        }
                    }
                    if lengths.isEmpty { fail("length framing without Content-Length") }
                case .chunked:
                    if !lengths.isEmpty { fail("chunked with Content-Length") }
                }
                if r.headers.fields.count > limits.maxHeaderFields { fail("too many fields accepted") }
                if !r.method.utf8.allSatisfy(ASCII.isTokenByte) || r.method.isEmpty { fail("method not a token") }
                if r.target.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F }) { fail("target has control/space") }
                for field in r.headers.fields {
                    if field.name.isEmpty || !field.name.utf8.allSatisfy(ASCII.isTokenByte) { fail("bad field name") }
                    if field.value.utf8.contains(where: { $0 == 0 || $0 == 0x0D || $0 == 0x0A }) { fail("CR/LF/NUL in value") }
                }
                if parsed.expectContinue && parsed.framing == .none { fail("continue without body") }
                out.append(Summary(method: r.method, target: r.target, path: r.path, rawPath: r.rawPath, query: r.query,
                    version: r.version, headers: r.headers.fields.map { $0.name + ":" + $0.value }, body: r.body,
                    keepAlive: parsed.keepAlive, framing: parsed.framing, wire: parsed.wireBytes))
            }
            if case .needMoreBytes = event { break }
        }
    }
    return (out, nil)
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let limits = presets[Int(input[0] & 3)]
    let splitCount = Int(input[1] & 15)
    guard size >= 2 + splitCount else { return 0 }
    let sizes = input[2..<(2 + splitCount)].map { Int($0) + 1 }
    let payload = input[(2 + splitCount)...]
    var chunks: [ArraySlice<UInt8>] = []
    var rest = payload
    for n in sizes where !rest.isEmpty {
        chunks.append(rest.prefix(n))
        rest = rest.dropFirst(n)
    }
    if !rest.isEmpty { chunks.append(rest) }
    let split = run(chunks, limits: limits)
    let whole = run([payload], limits: limits)
    let byte = run(payload.indices.map { payload[$0...$0] }, limits: limits)
    // However the bytes arrive, the same requests come out (wire bytes included), and a failure is a failure
    // (its kind may differ: a long line seen unterminated is too long before it is malformed).
    for (name, other) in [("split", split), ("byte", byte)] {
        if other.0 != whole.0 { fail("\(name) requests differ from whole: \(other.0.count) vs \(whole.0.count)") }
        if (other.1 == nil) != (whole.1 == nil) { fail("\(name) failure \(String(describing: other.1)) vs whole \(String(describing: whole.1))") }
    }
    return 0
}
