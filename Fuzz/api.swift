// libFuzzer target `api` (scripts/fuzz): the API's input handling, compiled into module API with its sources.
// Input: byte 0 (mod 8) picks the check, the rest is its input: whole requests through APIResponder (never a 500,
// every JSON body valid JSON), JSONWriter escaping (any string round-trips through JSONSerialization), percent-
// decoding and query items (against a reference decoder), routing (byte-wise against segment-wise), QueueName and
// RequestID (against reference rules), signature headers (against a reference check) and page cursors.
import Backends
import Domain
import Foundation
import HTTPServer
import Logging
import Synchronization

private func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("INVARIANT: \(message)\n".utf8))
    abort()
}

/// A head that moves every third ingest until the twentieth commit (so that the stores stop growing), for queues
/// `demo/main` and `q`.
final class FixedSource: SourceControl, SourceControlFactory {
    let count = Mutex(0)
    func latest() throws(BackendError) -> SourceURI {
        let n = count.withLock { value -> Int in value += 1; return min(value / 3, 20) }
        return SourceURI("git://demo/c\(n)")
    }
    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool { true }
    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage { HistoryPage(uris: [], nextCursor: "") }
    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard ["demo/main", "q"].contains(queue.rawValue) else { throw .notFound }
        return self
    }
}

final class NullPublisher: TopicPublisher {
    func publish(_ message: Message) throws(BackendError) {}
}

private func makeResponder(secret: String?) -> APIResponder {
    let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    let requests = MemoryRequestStore()
    let queues = MemoryQueueStore()
    let ingest = IngestController(
        requests: requests, uris: MemoryRequestURIStore(), queues: queues, counter: MemoryCounter(), sources: FixedSource(),
        publisher: NullPublisher(), logger: logger)
    return APIResponder(
        dependencies: APIDependencies(
            ingest: ingest, requests: requests, queues: queues,
            isConfigured: { ["demo/main", "q"].contains($0.rawValue) },
            readiness: { [ReadinessCheck(name: "database", ok: true)] },
            metrics: { Array("# m\n".utf8) },
            signature: secret.map { SignatureVerifier(secret: Array($0.utf8)) }),
        logger: logger)
}

private let open = makeResponder(secret: nil)
private let signed = makeResponder(secret: "s3cret")
private let verifier = SignatureVerifier(secret: Array("s3cret".utf8))
private let methods = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "BREW", "get"]

private func isJSON(_ body: [UInt8]) -> Bool {
    (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil
}

/// Whole requests through the responder: never a 500, every JSON body valid JSON.
private func responder(_ input: ArraySlice<UInt8>) {
    guard let first = input.first else { return }
    let parts = input.dropFirst().split(separator: 0x0A, maxSplits: 3, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }
    let rawPath = parts.count > 0 ? parts[0] : "/"
    let query = parts.count > 1 ? parts[1] : ""
    let body = parts.count > 2 ? Array(parts[2].utf8) : []
    let signatureValue = parts.count > 3 ? parts[3] : nil
    var headers = HTTPHeaders()
    if first & 0x10 != 0 { headers.add("X-Stovepipe-Signature-256", verifier.signature(for: body)) }
    if let signatureValue { headers.add(first & 0x20 != 0 ? "X-Hub-Signature-256" : "X-Stovepipe-Signature-256", signatureValue) }
    let method = methods[Int(first & 7)]
    let target = rawPath + (query.isEmpty ? "" : "?" + query)
    let request = HTTPRequest(
        method: method, target: target, path: rawPath.removingPercentEncoding ?? rawPath, rawPath: rawPath, query: query,
        headers: headers, body: body)
    let responder = first & 0x08 != 0 ? signed : open
    let response = responder.respond(to: request)
    response.afterSend?()
    if response.status >= 500 && response.status != 501 && response.status != 503 {
        fail("status \(response.status) for \(method) \(target.debugDescription): \(String(decoding: response.body, as: UTF8.self))")
    }
    let type = response.headers["Content-Type"] ?? ""
    if type.contains("json") && !response.body.isEmpty && !isJSON(response.body) {
        fail("invalid JSON body for \(target.debugDescription): \(String(decoding: response.body, as: UTF8.self))")
    }
}

/// For any string, JSONWriter's output is JSON that reads back as the same string.
private func jsonWriter(_ input: ArraySlice<UInt8>) {
    let text = String(decoding: input, as: UTF8.self)
    var writer = JSONWriter()
    writer.beginArray()
    writer.string(text)
    writer.string { $0.append(contentsOf: text.utf8) }
    writer.beginObject()
    writer.key(text)
    writer.string(text)
    writer.endObject()
    writer.endArray()
    guard let parsed = try? JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [Any], parsed.count == 3,
        let first = parsed[0] as? String, let object = parsed[2] as? [String: String]
    else { fail("not JSON: \(String(decoding: writer.bytes, as: UTF8.self).debugDescription)") }
    if first != text { fail("round trip changed \(text.debugDescription) to \(first.debugDescription)") }
    if object[text] != text { fail("key round trip changed \(text.debugDescription)") }
    // Valid UTF-8 appended raw must round-trip byte for byte too.
    if let second = parsed[1] as? String, second != text {
        fail("appended text changed: \(text.debugDescription) -> \(second.debugDescription)")
    }
    // Text escaping leaves no C0 control, DEL or C1 control in the line, and only doubled or escape backslashes.
    var line: [UInt8] = []
    JSONWriter.appendTextEscaped(text, to: &line)
    let escaped = String(decoding: line, as: UTF8.self)
    for scalar in escaped.unicodeScalars where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
        fail("text escape left U+\(String(scalar.value, radix: 16)) in \(escaped.debugDescription)")
    }
    var appended = Array("prefix".utf8)
    appended.append(contentsOf: text.utf8)
    JSONWriter.textEscapeAppended(&appended, from: 6)
    if Array(appended.dropFirst(6)) != line { fail("textEscapeAppended differs from appendTextEscaped") }
}

/// The reference decoder: %XX escapes (and + as space when asked), then UTF-8 validation.
private func referenceDecode(_ bytes: [UInt8], plusAsSpace: Bool) -> String? {
    var out: [UInt8] = []
    var index = 0
    func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: b - 0x30
        case 0x41...0x46: b - 0x41 + 10
        case 0x61...0x66: b - 0x61 + 10
        default: nil
        }
    }
    while index < bytes.count {
        let b = bytes[index]
        if b == 0x25 {
            guard index + 2 < bytes.count, let h = hex(bytes[index + 1]), let l = hex(bytes[index + 2]) else { return nil }
            out.append(h << 4 | l)
            index += 3
        } else {
            out.append(plusAsSpace && b == 0x2B ? 0x20 : b)
            index += 1
        }
    }
    return String(validating: out, as: UTF8.self)
}

private func percentDecoding(_ input: ArraySlice<UInt8>) {
    let bytes = Array(input)
    for plus in [false, true] {
        let expected = referenceDecode(bytes, plusAsSpace: plus)
        let got = bytes.withUnsafeBufferPointer { PercentDecoding.decode($0, plusAsSpace: plus) }
        if got != expected { fail("decode(plus: \(plus)) \(bytes) gave \(String(describing: got)), expected \(String(describing: expected))") }
        let text = String(decoding: input, as: UTF8.self)
        let viaSubstring = PercentDecoding.decode(text[...], plusAsSpace: plus)
        if viaSubstring != referenceDecode(Array(text.utf8), plusAsSpace: plus) { fail("Substring decode differs") }
    }
    let query = String(decoding: input, as: UTF8.self)
    _ = PercentDecoding.queryItems(query)
}

/// The byte-wise route matcher agrees with the segment-wise one on ASCII paths.
private func route(_ input: ArraySlice<UInt8>) {
    let path = String(decoding: input, as: UTF8.self)
    let fast = Result { () throws(Route.Failure) in try Route.match(rawPath: path) }
    // Only the byte-wise matcher sees "*" (the segment-wise one gets non-ASCII paths only).
    guard path.utf8.allSatisfy({ $0 < 0x80 }), path != "*" else { return }
    let slow = Result { () throws(Route.Failure) in try Route.match(segments: PercentDecoding.rawSegments(path)) }
    switch (fast, slow) {
    case (.success(let a), .success(let b)) where a == b: break
    case (.failure(let a), .failure(let b)) where a == b: break
    default: fail("route of \(path.debugDescription): byte-wise \(fast), segment-wise \(slow)")
    }
}

private func isQueueNameReference(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    guard !bytes.isEmpty, bytes.count <= 200 else { return false }
    for segment in bytes.split(separator: 0x2F, omittingEmptySubsequences: false) {
        if segment.isEmpty || segment.allSatisfy({ $0 == 0x2E }) && segment.count <= 2 { return false }
        for b in segment {
            switch b {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2E, 0x5F, 0x2D: continue
            default: return false
            }
        }
    }
    return true
}

private func ids(_ input: ArraySlice<UInt8>) {
    let text = String(decoding: input, as: UTF8.self)
    let name = try? QueueName(text)
    if (name != nil) != isQueueNameReference(text) { fail("QueueName(\(text.debugDescription)) = \(String(describing: name))") }
    // Reference: request/<queue>/<n>, n a positive decimal without leading zeros that fits UInt64.
    var expected: RequestID?
    let utf8 = Array(text.utf8)
    if text.hasPrefix("request/"), let slash = utf8.lastIndex(of: 0x2F), slash >= 8 {
        let queue = String(decoding: utf8[8..<slash], as: UTF8.self)
        let digits = String(decoding: utf8[(slash + 1)...], as: UTF8.self)
        if let first = digits.utf8.first, first != 0x30, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let number = UInt64(digits), let q = try? QueueName(queue)
        {
            expected = RequestID(queue: q, number: number)
        }
    }
    let parsed = try? RequestID(parsing: text)
    if parsed != expected { fail("RequestID(parsing: \(text.debugDescription)) = \(String(describing: parsed)), expected \(String(describing: expected))") }
    if let parsed {
        if parsed.description != text { fail("description \(parsed.description) != \(text)") }
        var writer = JSONWriter()
        writer.string(parsed)
        if writer.bytes != Array("\"\(text)\"".utf8) { fail("JSONWriter.string(id) differs") }
    }
}

private func signature(_ input: ArraySlice<UInt8>) {
    let split = input.split(separator: 0x0A, maxSplits: 1, omittingEmptySubsequences: false)
    let header = String(decoding: split[0], as: UTF8.self)
    let body = split.count > 1 ? Array(split[1]) : []
    let correct = verifier.signature(for: body)
    let expected = header.utf8.count == correct.utf8.count && header.hasPrefix("sha256=")
        && header.lowercased() == correct
    let got = verifier.verify(header: header, body: body)
    if got != expected { fail("verify(\(header.debugDescription)) = \(got), expected \(expected)") }
    if !verifier.verify(header: correct, body: body) { fail("own signature rejected") }
}

private func cursor(_ input: ArraySlice<UInt8>) {
    let text = String(decoding: input, as: UTF8.self)
    guard let queue = try? QueueName("q") else { fail("QueueName(\"q\") rejected") }
    if let before = PageCursor.decode(text, queue: queue) {
        if before == 0 { fail("cursor 0") }
    }
    var number: UInt64 = 0
    for b in input.prefix(8) { number = number << 8 | UInt64(b) }
    let name = (try? QueueName(String(decoding: input.filter { $0 > 0x40 && $0 < 0x5B }, as: UTF8.self))) ?? queue
    let encoded = PageCursor.encode(queue: name, before: max(number, 1))
    if PageCursor.decode(encoded, queue: name) != max(number, 1) { fail("cursor round trip \(encoded)") }
    for cut in 1..<encoded.count where PageCursor.decode(String(encoded.dropLast(cut)), queue: name) != nil {
        fail("cursor \(encoded) cut short by \(cut) still decodes")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let rest = input[1...]
    switch input[0] & 7 {
    case 0, 1: responder(rest)
    case 2: jsonWriter(rest)
    case 3: percentDecoding(rest)
    case 4: route(rest)
    case 5: ids(rest)
    case 6: signature(rest)
    default: cursor(rest)
    }
    return 0
}
