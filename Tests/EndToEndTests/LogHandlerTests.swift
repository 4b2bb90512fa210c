import API
import Foundation
import Glibc
import Logging
import Synchronization
import TestSupport
import Testing
@testable import stovepipe

/// A pipe whose read end is drained into a string as lines arrive.
final class LogPipe {
    let readFD: Int32
    let writeFD: Int32
    private var received: [UInt8] = []

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw POSIXError(.EMFILE) }
        readFD = fds[0]
        writeFD = fds[1]
        _ = fcntl(readFD, F_SETFL, fcntl(readFD, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    /// Everything written so far.
    var text: String {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(readFD, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            received.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: received, as: UTF8.self)
    }

    var lines: [Substring] { text.split(separator: "\n") }
}

@Suite struct LogHandlerTests {
    /// The line `logger.info` writes for `fields` as metadata strings, then the one the handler's sorted-fields
    /// path writes for them.
    static func linesThroughBothPaths(
        _ logger: Logger, _ pipe: LogPipe, message: String, fields: RequestLogFields
    ) throws -> [Substring] {
        var metadata = Logger.Metadata()
        for field in RequestLogFields.Field.allCases { metadata[field.key] = .string(fields.value(of: field)) }
        logger.info("\(message)", metadata: metadata)
        let handler = try #require(logger.handler as? StderrLogHandler)
        handler.log(level: .info, message: message, sortedFields: fields)
        let lines = pipe.lines
        try #require(lines.count == 2)
        return lines
    }

    /// `line` without its timestamp, which differs between two lines written one after the other.
    static func withoutTimestamp(_ line: Substring, _ format: LogFormat) -> String {
        format == .text
            ? String(line.drop { $0 != " " })
            : String(line).replacing(/"ts":"[^"]*"/, with: "")
    }

    static func logger(_ sink: LogSink, format: LogFormat, level: Logger.Level = .info) -> Logger {
        var logger = Logger(label: "stovepipe", factory: { StderrLogHandler(label: $0, format: format, logLevel: level, sink: sink) })
        logger[metadataKey: "component"] = "http"
        return logger
    }

    @Test func textLinesCarryTimestampLevelMessageAndSortedMetadata() throws {
        let pipe = try LogPipe()
        let logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        logger.info("request", metadata: ["zeta": "1", "alpha": "two words"])
        logger.debug("not at this level")
        let lines = pipe.lines
        #expect(lines.count == 1)
        let line = String(lines.first ?? "")
        #expect(line.hasSuffix(" INFO stovepipe: request alpha=two words component=http zeta=1"))
        let timestamp = line.prefix { $0 != " " }
        #expect(timestamp.count == "2026-11-29T09:11:55.123Z".count && timestamp.hasSuffix("Z"))
    }

    @Test func jsonLinesAreObjectsWithoutDuplicateMembers() throws {
        let pipe = try LogPipe()
        let logger = Self.logger(LogSink(fd: pipe.writeFD), format: .json)
        logger.warning("quote \" newline \n tab \t", metadata: [
            "msg": "a metadata key that collides", "list": ["a", "b"], "nested": ["k": "v"], "path": "/a/b",
        ])
        let line = try #require(pipe.lines.first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["msg"] as? String == "quote \" newline \n tab \t")
        #expect(object["meta.msg"] as? String == "a metadata key that collides")
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "stovepipe")
        #expect(object["component"] as? String == "http")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect(object["nested"] as? [String: String] == ["k": "v"])
        #expect(object["path"] as? String == "/a/b")
        #expect((object["ts"] as? String)?.hasSuffix("Z") == true)
        #expect(line.components(separatedBy: "\"msg\":").count == 2, "one msg member only")
    }

    @Test func requestLinesCarryEveryFieldInKeyOrder() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        logger[metadataKey: "node"] = "a1"
        logger.info("request", metadata: [
            "http.request_id": "r-1", "http.method": "GET", "http.route": "/requests/{id}", "http.status": "200",
            "duration.ms": "0.0125", "bytes": "311",
        ])
        let line = String(try #require(pipe.lines.first))
        #expect(line.hasSuffix(
            " INFO stovepipe: request bytes=311 component=http duration.ms=0.0125 http.method=GET http.request_id=r-1"
                + " http.route=/requests/{id} http.status=200 node=a1"))
    }

    @Test(arguments: LogFormat.allCases)
    func sortedFieldsWriteTheLineTheMetadataDictionaryWrites(_ format: LogFormat) throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: format)
        logger[metadataKey: "a.first"] = "own"
        logger[metadataKey: "http.route"] = "overridden"
        logger[metadataKey: "zz.last"] = ["k": "v"]
        let fields = [
            ("bytes", "311"), ("duration.ms", "0.0125"), ("http.method", "GET"), ("http.request_id", "r-\"1\""),
            ("http.route", "/requests/{id}"), ("http.status", "200"),
        ]
        logger.info("request", metadata: Logger.Metadata(uniqueKeysWithValues: fields.map { ($0.0, .string($0.1)) }))
        let handler = try #require(logger.handler as? StderrLogHandler)
        handler.log(level: .info, message: "request", sortedFields: RequestLogFields(
            bytes: 311, nanoseconds: 12_500, method: "GET", route: "/requests/{id}", status: 200, requestID: "r-\"1\""))
        let lines = pipe.lines
        try #require(lines.count == 2)
        // The timestamp is the only part that may differ.
        #expect(Self.withoutTimestamp(lines[0], format) == Self.withoutTimestamp(lines[1], format))
        #expect(lines[1].contains("http.route") && !lines[1].contains("overridden"))
    }

    static let requestFields = RequestLogFields(
        bytes: 311, nanoseconds: 12_500, method: "GET", route: "/requests/{id}", status: 200, requestID: "r-1")

    @Test func requestLinesAreExactlyTheseBytesAcrossASecondBoundary() throws {
        for format in LogFormat.allCases {
            let pipe = try LogPipe()
            var logger = Self.logger(LogSink(fd: pipe.writeFD), format: format)
            logger[metadataKey: "node"] = "a1"
            let handler = try #require(logger.handler as? StderrLogHandler)
            for (seconds, nanoseconds) in [(1_795_950_715 as Int64, 999_999_999), (1_795_950_716, 0), (1_795_950_716, 1_000_000)] {
                handler.log(
                    level: .info, message: "request", sortedFields: Self.requestFields,
                    time: RFC3339.Instant(seconds: seconds, nanoseconds: nanoseconds))
            }
            let expected = switch format {
            case .text:
                ["2026-11-29T11:11:55.999Z", "2026-11-29T11:11:56.000Z", "2026-11-29T11:11:56.001Z"].map {
                    $0 + " INFO stovepipe: request bytes=311 component=http duration.ms=0.0125 http.method=GET"
                        + " http.request_id=r-1 http.route=/requests/{id} http.status=200 node=a1\n"
                }
            case .json:
                ["2026-11-29T11:11:55.999Z", "2026-11-29T11:11:56.000Z", "2026-11-29T11:11:56.001Z"].map {
                    #"{"level":"info","logger":"stovepipe","msg":"request","ts":""# + $0
                        + #"","bytes":"311","component":"http","duration.ms":"0.0125","http.method":"GET","#
                        + #""http.request_id":"r-1","http.route":"/requests/{id}","http.status":"200","node":"a1"}"# + "\n"
                }
            }
            #expect(pipe.text == expected.joined(), "\(format)")
        }
    }

    @Test func jsonRequestLinesEscapeValuesAndPrefixReservedKeys() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .json)
        logger[metadataKey: "ts"] = "h\"x"
        logger[metadataKey: "a\\b"] = "tab\t"
        let handler = try #require(logger.handler as? StderrLogHandler)
        handler.log(
            level: .warning, message: "re\"quest", sortedFields: RequestLogFields(
                bytes: -1, nanoseconds: 5, method: "G\u{1}T", route: "/r", status: 599, requestID: "r-\"1\"\n"),
            time: RFC3339.Instant(seconds: 0, nanoseconds: 0))
        #expect(pipe.text == #"{"level":"warning","logger":"stovepipe","msg":"re\"quest","ts":"1970-01-01T00:00:00.000Z","#
            + #""a\\b":"tab\t","bytes":"-1","component":"http","duration.ms":"5e-06","http.method":"G\u0001T","#
            + #""http.request_id":"r-\"1\"\n","http.route":"/r","http.status":"599","meta.ts":"h\"x"}"# + "\n")
    }

    @Test func requestLinesWithNonStringMetadataCarryTheGivenTimeToo() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        logger[metadataKey: "zz.last"] = ["k": "v"]
        let handler = try #require(logger.handler as? StderrLogHandler)
        handler.log(
            level: .info, message: "request", sortedFields: Self.requestFields,
            time: RFC3339.Instant(seconds: 1_795_950_716, nanoseconds: 42_000_000))
        #expect(pipe.text == "2026-11-29T11:11:56.042Z INFO stovepipe: request bytes=311 component=http duration.ms=0.0125"
            + #" http.method=GET http.request_id=r-1 http.route=/requests/{id} http.status=200 zz.last=["k": "v"]"# + "\n")
    }

    @Test(arguments: LogFormat.allCases)
    func stringMetadataRequestLinesAreTheLinesTheMetadataDictionaryWrites(_ format: LogFormat) throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: format)
        logger[metadataKey: "a.first"] = "own \"quoted\"\t"
        logger[metadataKey: "http.route"] = "overridden"
        logger[metadataKey: "msg"] = "reserved"
        logger[metadataKey: "zz.last"] = "ü"
        let fields = RequestLogFields(
            bytes: 0, nanoseconds: 1_234_567_890, method: "PO\tST", route: "/queues/{queue}/ingest", status: 201,
            requestID: "r-\u{1F}")
        let lines = try Self.linesThroughBothPaths(logger, pipe, message: "req\"uest", fields: fields)
        #expect(Self.withoutTimestamp(lines[0], format) == Self.withoutTimestamp(lines[1], format))
        #expect(lines[1].contains("/queues/{queue}/ingest") && !lines[1].contains("overridden"))
    }

    @Test(arguments: LogFormat.allCases)
    func requestLinesLongerThanTheirFirstBufferAreWrittenWhole(_ format: LogFormat) throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: format)
        logger[metadataKey: "zz.long"] = .string(String(repeating: "m\\", count: 700))
        // 3,000 bytes of id, 4,500 once escaped for JSON: well past the 1 KiB the line is first written into.
        let fields = RequestLogFields(
            bytes: 1, nanoseconds: 2_000, method: "GET", route: "/r", status: 200,
            requestID: String(repeating: "r\"", count: 1_500))
        let lines = try Self.linesThroughBothPaths(logger, pipe, message: "request", fields: fields)
        #expect(lines[1].utf8.count > 4_000)
        #expect(Self.withoutTimestamp(lines[0], format) == Self.withoutTimestamp(lines[1], format))
    }

    @Test func eventMetadataWinsOverHandlerMetadataOnce() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        logger[metadataKey: "zone"] = "eu"
        logger[metadataKey: "gone"] = "x"
        logger[metadataKey: "gone"] = nil
        logger.notice("one", metadata: ["component": "api", "a": ["x", "y"], "z": ["k": "v"], "n": .stringConvertible(42)])
        logger.notice("two")
        logger.notice("three", metadata: [:])
        let lines = pipe.lines
        #expect(lines.count == 3)
        #expect(lines.first?.hasSuffix(#" NOTICE stovepipe: one a=["x", "y"] component=api n=42 z=["k": "v"] zone=eu"#) == true)
        #expect(lines.dropFirst().first?.hasSuffix(" NOTICE stovepipe: two component=http zone=eu") == true)
        #expect(lines.last?.hasSuffix(" NOTICE stovepipe: three component=http zone=eu") == true)
    }

    @Test func jsonRequestLinesKeepMemberOrder() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .json)
        logger[metadataKey: "ts"] = "handler"
        logger.info("request", metadata: ["level": "meta", "component": "api", "bytes": "12", "list": [.stringConvertible(1)]])
        let line = String(try #require(pipe.lines.first))
        #expect(line.hasPrefix(#"{"level":"info","logger":"stovepipe","msg":"request","ts":""#))
        #expect(line.hasSuffix(#"Z","bytes":"12","component":"api","meta.level":"meta","list":["1"],"meta.ts":"handler"}"#))
    }

    @Test func backgroundWriterKeepsOrderAndWarningsAreWrittenAtOnce() throws {
        let pipe = try LogPipe()
        let sink = LogSink(fd: pipe.writeFD)
        let logger = Self.logger(sink, format: .text)
        sink.startBackgroundWriter()
        for index in 0..<200 { logger.info("line \(index)") }
        logger.error("failure")
        // The error is written before error() returns, after every line queued ahead of it.
        let lines = pipe.lines
        #expect(lines.count == 201)
        #expect(lines.last?.hasSuffix("ERROR stovepipe: failure component=http") == true)
        for (index, line) in lines.dropLast().enumerated() {
            #expect(line.hasSuffix("INFO stovepipe: line \(index) component=http"))
        }
        logger.info("after")
        sink.stopBackgroundWriter()
        #expect(pipe.lines.last?.hasSuffix("INFO stovepipe: after component=http") == true)
    }

    @Test func aWarningWaitsForAStalledStderrOnlySoLongAndIsWrittenOnceItDrains() throws {
        let pipe = try LogPipe()
        Self.fill(pipe)
        let sink = LogSink(fd: pipe.writeFD)
        let logger = Self.logger(sink, format: .text)
        sink.startBackgroundWriter()
        let returned = Mutex(0)
        let warn = { (text: String) in
            Thread.detachNewThread {
                logger.warning("\(text)")
                returned.withLock { $0 += 1 }
            }
        }
        warn("first")
        // Unbounded, warning() would block until the pipe is read; the second one does not wait at all.
        #expect(eventually { returned.withLock { $0 } == 1 })
        warn("second")
        #expect(eventually { returned.withLock { $0 } == 2 })
        // The writer thread writes both lines once the pipe drains.
        var drained = ""
        #expect(eventually { drained += pipe.text; return drained.contains("WARNING stovepipe: second") })
        #expect(drained.contains("WARNING stovepipe: first"))
        sink.stopBackgroundWriter()
    }

    /// Fills `pipe` the way a stalled log shipper leaves stderr: the next write(2) blocks.
    static func fill(_ pipe: LogPipe) {
        _ = fcntl(pipe.writeFD, F_SETFL, fcntl(pipe.writeFD, F_GETFL) | O_NONBLOCK)
        let filler = [UInt8](repeating: UInt8(ascii: "."), count: 65_536)
        while filler.withUnsafeBytes({ write(pipe.writeFD, $0.baseAddress, $0.count) }) > 0 {}
        _ = fcntl(pipe.writeFD, F_SETFL, fcntl(pipe.writeFD, F_GETFL) & ~O_NONBLOCK)
    }

    /// Logs 500 lines of about 60 bytes, far more than a full pipe and a 2,000-byte buffer hold together, then
    /// returns all the pipe got once the writer has stopped (the pipe drained meanwhile, so that it can).
    static func overflowingTheBuffer(format: LogFormat) -> String {
        guard let pipe = try? LogPipe() else { return "" }
        // A full pipe: the writer thread blocks in write(2) as it would behind a stalled log shipper.
        fill(pipe)
        let sink = LogSink(fd: pipe.writeFD, bufferLimit: 2_000)
        let logger = logger(sink, format: format)
        sink.startBackgroundWriter()
        for index in 0..<500 { logger.info("queued \(index)") }
        let stopped = Latch()
        let stopper = Thread {
            sink.stopBackgroundWriter()
            stopped.arrive()
        }
        stopper.start()
        // Lines accepted after a drop notice, and the notice of later drops, come out after it: read to the end.
        _ = eventually { _ = pipe.text; return stopped.arrivals == 1 }
        return pipe.text
    }

    @Test func linesBeyondTheBufferLimitAreDroppedAndCounted() throws {
        let drained = Self.overflowingTheBuffer(format: .text)
        let notices = drained.matches(of: /(\d+) lines dropped/).compactMap { Int($0.1) }
        try #require(!notices.isEmpty, "\(drained.suffix(2_000))")
        let dropped = notices.reduce(0, +)
        let written = Set(drained.matches(of: /queued (\d+) component=http/).compactMap { Int($0.1) })
        // Which lines get through depends on when the writer thread takes its batches (a loaded machine may run it
        // late), but every line is either written once or counted as dropped, and a full pipe with a 2,000-byte
        // buffer takes a few batches of about 30 lines at most.
        #expect(written.count + dropped == 500, "written \(written.sorted()), dropped \(notices)")
        #expect(written.contains(0))
        #expect(written.count <= 70, "\(written.sorted())")
    }
}

extension LogHandlerTests {
    /// A value with a line break or a terminal escape (an error text from a server, a URI from a config) must not
    /// start a second line or reach the terminal raw: one event, one line.
    @Test func textLinesEscapeControlCharactersOnBothPaths() throws {
        let pipe = try LogPipe()
        var logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        logger[metadataKey: "own"] = "a\rb"
        logger.warning("bad\nthing", metadata: ["error": "x\n2026-11-29T11:11:55.999Z INFO stovepipe: forged \u{1B}[31m\u{7F}"])
        let handler = try #require(logger.handler as? StderrLogHandler)
        handler.log(
            level: .info, message: "re\nquest", sortedFields: RequestLogFields(
                bytes: 1, nanoseconds: 2_000, method: "G\u{1B}T", route: "/r", status: 200, requestID: "r\n1"),
            time: RFC3339.Instant(seconds: 0, nanoseconds: 0))
        let lines = pipe.lines
        #expect(lines.count == 2)
        #expect(lines.first?.hasSuffix(
            #" WARNING stovepipe: bad\nthing component=http error=x\n2026-11-29T11:11:55.999Z INFO stovepipe: forged \u001b[31m\u007f own=a\rb"#)
            == true)
        let requestLine: String = #"1970-01-01T00:00:00.000Z INFO stovepipe: re\nquest bytes=1 component=http duration.ms=0.002"#
            + #" http.method=G\u001bT http.request_id=r\n1 http.route=/r http.status=200 own=a\rb"#
        #expect(lines.last.map(String.init) == requestLine)
    }
}

extension LogHandlerTests {
    /// With `--log-format json` every line is a JSON object (README): a log shipper that parses each line must
    /// not choke on the very line that says lines were lost.
    @Test func theDropNoticeAmongJSONLinesIsAJSONObject() throws {
        let drained = Self.overflowingTheBuffer(format: .json)
        let notice = try #require(drained.split(separator: "\n").first { $0.contains("lines dropped") })
        let object = (try? JSONSerialization.jsonObject(with: Data(notice.utf8))) as? [String: Any]
        #expect(object?["level"] as? String == "warning")
        #expect(object?["logger"] as? String == "log")
        #expect((object?["msg"] as? String)?.hasSuffix(" lines dropped (stderr was not read fast enough)") == true)
        #expect((object?["ts"] as? String)?.hasSuffix("Z") == true)
    }
}

extension LogHandlerTests {
    /// O_NONBLOCK belongs to the open file, so a stderr shared with a parent that set it is non-blocking here too:
    /// a line longer than the pipe holds then meets EAGAIN once the pipe is full, and its rest must wait for the
    /// reader rather than vanish uncounted (leaving a cut line for the next one to be glued to).
    @Test func aLineLongerThanANonBlockingPipeIsWrittenWhole() throws {
        let pipe = try LogPipe()
        _ = fcntl(pipe.writeFD, F_SETFL, fcntl(pipe.writeFD, F_GETFL) | O_NONBLOCK)
        let logger = Self.logger(LogSink(fd: pipe.writeFD), format: .text)
        // 1 MiB: sixteen times what the pipe holds, written by one thread while this one reads.
        let long = String(repeating: "x", count: 1 << 20)
        let returned = Mutex(false)
        Thread.detachNewThread {
            logger.info("\(long) end")
            logger.info("next")
            returned.withLock { $0 = true }
        }
        // `text` drains the pipe and is everything read so far.
        #expect(eventually { pipe.text.contains("stovepipe: next") && returned.withLock { $0 } })
        let lines = pipe.lines
        #expect(lines.count == 2)
        #expect(lines.first?.hasSuffix(" INFO stovepipe: \(long) end component=http") == true)
    }
}

extension LogHandlerTests {
    /// A text line's escapes must read back one way: a backslash of the value is doubled, so that the escape `\n` (a
    /// line break) and a backslash followed by n differ; C1 controls (U+009B is CSI to some terminals) are escaped
    /// like C0 ones; other non-ASCII text is left alone. JSON lines escape by RFC 8259 §7 and stay parseable.
    @Test(arguments: [
        ("a\\b", #"a\\b"#, #"a\\b"#),
        ("a\nb", #"a\nb"#, #"a\nb"#),
        ("a\\nb", #"a\\nb"#, #"a\\nb"#),
        ("\\u001b", #"\\u001b"#, #"\\u001b"#),
        ("\u{9B}31m", #"\u009b31m"#, "\u{9B}31m"),
        ("\u{80}x\u{85}\u{9F}", #"\u0080x\u0085\u009f"#, "\u{80}x\u{85}\u{9F}"),
        ("\u{1B}[0m\u{7F}", #"\u001b[0m\u007f"#, #"\u001b[0m"# + "\u{7F}"),
        ("\u{A0}\u{C2}\u{DB}é€😀", "\u{A0}\u{C2}\u{DB}é€😀", "\u{A0}\u{C2}\u{DB}é€😀"),
        ("\"q\" \u{C2}\u{9B}", #""q" "# + "\u{C2}" + #"\u009b"#, #"\"q\" "# + "\u{C2}\u{9B}"),
    ])
    func valuesAreEscapedOneWayInTextAndJSONOnBothPaths(_ value: String, _ text: String, _ json: String) throws {
        for format in LogFormat.allCases {
            let pipe = try LogPipe()
            let logger = Self.logger(LogSink(fd: pipe.writeFD), format: format)
            logger.info("\(value)", metadata: ["k" + value: .string(value)])
            let handler = try #require(logger.handler as? StderrLogHandler)
            handler.log(
                level: .info, message: value, sortedFields: RequestLogFields(
                    bytes: 1, nanoseconds: 2_000, method: value, route: "/r", status: 200, requestID: value),
                time: RFC3339.Instant(seconds: 0, nanoseconds: 0))
            let lines = pipe.lines
            try #require(lines.count == 2, "\(format): \(pipe.text)")
            switch format {
            case .text:
                #expect(String(lines[0].drop { $0 != " " }) == " INFO stovepipe: \(text) component=http k\(text)=\(text)")
                #expect(String(lines[1]) == "1970-01-01T00:00:00.000Z INFO stovepipe: \(text) bytes=1 component=http"
                    + " duration.ms=0.002 http.method=\(text) http.request_id=\(text) http.route=/r http.status=200")
            case .json:
                #expect(lines[0].hasPrefix(#"{"level":"info","logger":"stovepipe","msg":"\#(json)","ts":""#), "\(lines[0])")
                #expect(lines[0].hasSuffix(#","component":"http","k\#(json)":"\#(json)"}"#), "\(lines[0])")
                #expect(String(lines[1]) == #"{"level":"info","logger":"stovepipe","msg":"\#(json)","ts":"1970-01-01T00:00:00.000Z","#
                    + #""bytes":"1","component":"http","duration.ms":"0.002","http.method":"\#(json)","#
                    + #""http.request_id":"\#(json)","http.route":"/r","http.status":"200"}"#)
                for line in lines {
                    let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                    #expect(object["msg"] as? String == value)
                }
            }
        }
    }
}
