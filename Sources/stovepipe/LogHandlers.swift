import API
import Conditions
import Foundation
import Logging

/// How log lines are written to stderr.
enum LogFormat: String, CaseIterable, Sendable {
    case text
    case json
}

/// Writes one line per event to stderr, as text or as a JSON object (for log shippers); in text, control characters
/// (C0, DEL and C1) are written as JSON string escapes and a backslash as `\\`, so that no value can end the line or
/// send a terminal escape, and an escape reads back one way.
struct StderrLogHandler: SortedFieldsLogHandler {
    let label: String
    let format: LogFormat
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:] {
        didSet {
            let sorted = metadata.sorted { $0.key < $1.key }
            ownKeys = sorted.map(\.key)
            ownValues = sorted.map(\.value)
            requestLineLayout = makeRequestLineLayout()
        }
    }
    /// `metadata`'s keys in ascending order and their values in that order, kept so that a log call sorts only its
    /// own metadata; apart, so that comparing a key copies no value.
    private var ownKeys: [String] = []
    private var ownValues: [Logger.Metadata.Value] = []
    /// The request line's bytes that stay the same from line to line; nil while a metadata value is not a string
    /// (the text of the others may change from one line to the next).
    private var requestLineLayout: RequestLineLayout?
    let sink: LogSink

    init(label: String, format: LogFormat, logLevel: Logger.Level, sink: LogSink = .standardError) {
        self.label = label
        self.format = format
        self.logLevel = logLevel
        self.sink = sink
        sink.useFormat(format)
        requestLineLayout = makeRequestLineLayout()
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = LineBuilder(
            format: format, level: event.level, label: label, message: event.message.description, time: .now())
        forEachField(event.metadata) { key, value in line.field(key, value) }
        // Warnings and worse go out before log() returns: they often precede an exit.
        sink.write(line.finish(), immediately: event.level >= .warning)
    }

    /// The per-request line's path: `sortedFields` merged with the handler's metadata as `log(event:)` merges
    /// an event's, without building and sorting a metadata dictionary or a string per field.
    func log(level: Logger.Level, message: String, sortedFields: RequestLogFields) {
        log(level: level, message: message, sortedFields: sortedFields, time: .now())
    }

    /// The per-request line stamped `time`.
    func log(level: Logger.Level, message: String, sortedFields: RequestLogFields, time: RFC3339.Instant) {
        guard let layout = requestLineLayout else {
            var line = LineBuilder(format: format, level: level, label: label, message: message, time: time)
            mergeWithOwnMetadata(
                RequestLogFields.Field.allCases, key: \.key, own: { key, value in line.field(key, value) },
                event: { field in line.field(field.key) { sortedFields.appendValue(of: field, to: &$0) } })
            sink.write(line.finish(), immediately: level >= .warning)
            return
        }
        // Written on the stack and copied into the sink's queue: no allocation and no free of its own. A line
        // longer than the first buffer (long values) is written again into one sized from the parts' lengths.
        var capacity = Self.requestLineStackCapacity
        while true {
            let written = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
                var writer = FixedByteWriter(buffer)
                layout.write(time: time, level: level, message: message, fields: sortedFields, to: &writer)
                guard !writer.overflowed else { return false }
                sink.write(UnsafeBufferPointer(rebasing: buffer[..<writer.count]), immediately: level >= .warning)
                return true
            }
            if written { return }
            capacity = max(capacity * 2, layout.maxLength(message: message, fields: sortedFields))
        }
    }

    /// Room for a request line with values of ordinary length.
    private static var requestLineStackCapacity: Int { 1 << 10 }

    /// The request line's layout for this handler's format, label and metadata; nil when a metadata value is not a string.
    private func makeRequestLineLayout() -> RequestLineLayout? {
        for value in ownValues {
            guard case .string = value else { return nil }
        }
        var afterLevel: [UInt8] = []
        switch format {
        case .text:
            afterLevel.append(UInt8(ascii: " "))
            JSONWriter.appendTextEscaped(label, to: &afterLevel)
            afterLevel.append(contentsOf: ": ".utf8)
        case .json:
            afterLevel.append(contentsOf: #"","logger":""#.utf8)
            JSONWriter.appendEscaped(label, to: &afterLevel)
            afterLevel.append(contentsOf: #"","msg":""#.utf8)
        }
        // The metadata's keys and values, and each field's key, in the order and spelling LineBuilder writes them.
        var literals: [UInt8] = []
        var runEnds: [Int] = []
        func appendKey(_ key: String) {
            switch format {
            case .text:
                literals.append(UInt8(ascii: " "))
                JSONWriter.appendTextEscaped(key, to: &literals)
                literals.append(UInt8(ascii: "="))
            case .json:
                literals.append(contentsOf: #",""#.utf8)
                JSONWriter.appendEscaped(Self.isReservedJSONKey(key) ? "meta." + key : key, to: &literals)
                literals.append(contentsOf: #"":""#.utf8)
            }
        }
        mergeWithOwnMetadata(
            RequestLogFields.Field.allCases, key: \.key,
            own: { key, value in
                guard case .string(let text) = value else { return }
                appendKey(key)
                switch format {
                case .text: JSONWriter.appendTextEscaped(text, to: &literals)
                case .json:
                    JSONWriter.appendEscaped(text, to: &literals)
                    literals.append(UInt8(ascii: "\""))
                }
            },
            event: { field in
                appendKey(field.key)
                runEnds.append(literals.count)
                if format == .json { literals.append(UInt8(ascii: "\"")) }
            })
        literals.append(contentsOf: format == .json ? "}\n".utf8 : "\n".utf8)
        runEnds.append(literals.count)
        return RequestLineLayout(
            format: format, afterLevel: afterLevel, literals: literals, runEnds: runEnds,
            fields: RequestLogFields.Field.allCases)
    }

    /// The per-request line's bytes that do not change from line to line: the label with its separators, the
    /// handler's metadata and the fields' keys, each spelled for the format; `write` adds the rest.
    private struct RequestLineLayout {
        let format: LogFormat
        /// What comes between the level and the message.
        let afterLevel: [UInt8]
        /// `literals[runEnds[i - 1]..<runEnds[i]]` comes before `fields[i]`'s value; the last run ends the line.
        let literals: [UInt8]
        let runEnds: [Int]
        let fields: [RequestLogFields.Field]

        /// At least the length of the line `write` writes for `message` and `fields`.
        func maxLength(message: String, fields values: RequestLogFields) -> Int {
            // Escapes (a JSON string's, a text line's of control characters) take at most six bytes per byte. The 64
            // cover the level (at most 8 bytes) and the punctuation around the level and the time (at most 19 bytes).
            let escaped = format == .json
            var length = RFC3339.maxMillisecondsLength + afterLevel.count + literals.count + message.utf8.count * 6 + 64
            for field in fields { length += values.maxValueLength(of: field, escaped: escaped) }
            return length
        }

        /// Writes the line, newline included, as LineBuilder writes it.
        func write(
            time: RFC3339.Instant, level: Logger.Level, message: String, fields values: RequestLogFields,
            to writer: inout FixedByteWriter
        ) {
            switch format {
            case .text:
                RFC3339.writeMilliseconds(time, to: &writer)
                writer.write(UInt8(ascii: " "))
                writer.write(StderrLogHandler.textLevel(level))
                afterLevel.withUnsafeBufferPointer { writer.write($0) }
                writer.writeTextEscaped(message)
            case .json:
                writer.write(#"{"level":""# as StaticString)
                writer.writeEscaped(level.rawValue)
                afterLevel.withUnsafeBufferPointer { writer.write($0) }
                writer.writeEscaped(message)
                writer.write(#"","ts":""# as StaticString)
                RFC3339.writeMilliseconds(time, to: &writer)
                writer.write(UInt8(ascii: "\""))
            }
            literals.withUnsafeBufferPointer { literals in
                var runStart = 0
                for (field, runEnd) in zip(fields, runEnds) {
                    writer.write(UnsafeBufferPointer(rebasing: literals[runStart..<runEnd]))
                    values.writeValue(of: field, escaped: format == .json, to: &writer)
                    runStart = runEnd
                }
                writer.write(UnsafeBufferPointer(rebasing: literals[runStart...]))
            }
        }
    }

    /// One line being written: the fixed parts first, then one call per metadata field in key order.
    private struct LineBuilder {
        private let format: LogFormat
        private var text: [UInt8] = []
        private var json = JSONWriter(capacity: 0)

        init(format: LogFormat, level: Logger.Level, label: String, message: String, time: RFC3339.Instant) {
            self.format = format
            switch format {
            case .json:
                json = JSONWriter(capacity: 256)
                json.beginObject()
                // Fixed members first, then the metadata by key; a metadata key equal to a fixed one is
                // prefixed so that no line carries a duplicate member (RFC 8259 §4: names SHOULD be unique).
                json.knownKey("level")
                json.string(level.rawValue)
                json.knownKey("logger")
                json.string(label)
                json.knownKey("msg")
                json.string(message)
                json.knownKey("ts")
                json.string(appending: { RFC3339.appendMilliseconds(time, to: &$0) })
            case .text:
                text.reserveCapacity(256)
                RFC3339.appendMilliseconds(time, to: &text)
                text.append(UInt8(ascii: " "))
                StderrLogHandler.textLevel(level).withUTF8Buffer { text.append(contentsOf: $0) }
                text.append(UInt8(ascii: " "))
                JSONWriter.appendTextEscaped(label, to: &text)
                text.append(UInt8(ascii: ":"))
                text.append(UInt8(ascii: " "))
                JSONWriter.appendTextEscaped(message, to: &text)
            }
        }

        mutating func field(_ key: String, string value: String) {
            switch format {
            case .json:
                json.key(StderrLogHandler.isReservedJSONKey(key) ? "meta." + key : key)
                json.string(value)
            case .text:
                text.append(UInt8(ascii: " "))
                JSONWriter.appendTextEscaped(key, to: &text)
                text.append(UInt8(ascii: "="))
                JSONWriter.appendTextEscaped(value, to: &text)
            }
        }

        /// A field whose value's UTF-8 text `appendValue` appends: a string value, without its `String`.
        mutating func field(_ key: String, appendingValue appendValue: (inout [UInt8]) -> Void) {
            switch format {
            case .json:
                json.key(StderrLogHandler.isReservedJSONKey(key) ? "meta." + key : key)
                json.string(appending: appendValue)
            case .text:
                text.append(UInt8(ascii: " "))
                JSONWriter.appendTextEscaped(key, to: &text)
                text.append(UInt8(ascii: "="))
                let start = text.count
                appendValue(&text)
                JSONWriter.textEscapeAppended(&text, from: start)
            }
        }

        mutating func field(_ key: String, _ value: Logger.Metadata.Value) {
            if case .string(let string) = value { return field(key, string: string) }
            switch format {
            case .json:
                json.key(StderrLogHandler.isReservedJSONKey(key) ? "meta." + key : key)
                StderrLogHandler.write(value, to: &json)
            case .text:
                field(key, string: value.description)
            }
        }

        /// The line with its newline.
        mutating func finish() -> [UInt8] {
            switch format {
            case .json:
                json.endObject()
                var line = json.bytes
                line.append(UInt8(ascii: "\n"))
                return line
            case .text:
                text.append(UInt8(ascii: "\n"))
                return text
            }
        }
    }

    /// Calls `body` with the handler's metadata and `extra` together, sorted by key, a key in both
    /// taking its value from `extra`: the order and values of the handler metadata merged with the
    /// event's, without building the merged dictionary.
    private func forEachField(
        _ extra: Logger.Metadata?, _ body: (String, Logger.Metadata.Value) -> Void
    ) {
        guard let extra, !extra.isEmpty else {
            for (key, value) in zip(ownKeys, ownValues) { body(key, value) }
            return
        }
        // The event's keys by an insertion sort of dictionary indices: events carry a handful of keys, and
        // sorted(by:) on (key, value) pairs spends more on copying pairs and its merge buffer than on comparing.
        let keys = extra.keys
        var event: [Logger.Metadata.Index] = []
        event.reserveCapacity(extra.count)
        var position = extra.startIndex
        while position != extra.endIndex {
            var slot = event.endIndex
            event.append(position)
            while slot > 0 && keys[position] < keys[event[slot - 1]] {
                event[slot] = event[slot - 1]
                slot -= 1
            }
            event[slot] = position
            extra.formIndex(after: &position)
        }
        let values = extra.values
        mergeWithOwnMetadata(event, key: { keys[$0] }, own: body, event: { body(keys[$0], values[$0]) })
    }

    /// Calls `own` for the handler's metadata and `event` for each of `events`, whose keys (`key`) ascend, all in
    /// key order; an event key equal to a handler key stands in for it.
    private func mergeWithOwnMetadata<Events: Collection>(
        _ events: Events, key: (Events.Element) -> String, own: (String, Logger.Metadata.Value) -> Void,
        event: (Events.Element) -> Void
    ) {
        var ownIndex = 0
        for element in events {
            let eventKey = key(element)
            while ownIndex < ownKeys.count && ownKeys[ownIndex] < eventKey {
                own(ownKeys[ownIndex], ownValues[ownIndex])
                ownIndex += 1
            }
            if ownIndex < ownKeys.count && ownKeys[ownIndex] == eventKey { ownIndex += 1 }
            event(element)
        }
        while ownIndex < ownKeys.count {
            own(ownKeys[ownIndex], ownValues[ownIndex])
            ownIndex += 1
        }
    }

    /// `level.rawValue.uppercased()`, without building it per line.
    fileprivate static func textLevel(_ level: Logger.Level) -> StaticString {
        switch level {
        case .trace: "TRACE"
        case .debug: "DEBUG"
        case .info: "INFO"
        case .notice: "NOTICE"
        case .warning: "WARNING"
        case .error: "ERROR"
        case .critical: "CRITICAL"
        }
    }

    fileprivate static func isReservedJSONKey(_ key: String) -> Bool {
        switch key {
        case "level", "logger", "msg", "ts": true
        default: false
        }
    }

    fileprivate static func write(_ value: Logger.Metadata.Value, to json: inout JSONWriter) {
        switch value {
        case .string(let text): json.string(text)
        case .stringConvertible(let convertible): json.string(convertible.description)
        case .array(let values):
            json.beginArray()
            for element in values { write(element, to: &json) }
            json.endArray()
        case .dictionary(let values):
            json.beginObject()
            for (key, element) in values.sorted(by: { $0.key < $1.key }) {
                json.key(key)
                write(element, to: &json)
            }
            json.endObject()
        }
    }
}

/// Where log lines go: stderr, written on the caller's thread until `startBackgroundWriter()`, then
/// batched by one writer thread so request threads neither wait on the pipe nor contend for it.
/// Warnings and worse are written before `write` returns, but a caller waits at most `immediateWait` for a
/// stalled stderr (a log shipper that stopped reading): what is left is written by the writer thread.
// @unchecked Sendable: `pending`, `dropped`, `format`, `background`, `stopped` and `stalledAt` are only read or written
// with `condition` locked; `writeLock` serialises the write(2) calls so batches never interleave.
final class LogSink: @unchecked Sendable {
    /// The process's stderr.
    static let standardError = LogSink(fd: STDERR_FILENO)

    /// How long the writer collects lines before writing them, unless `batchBytes` are waiting sooner.
    static let batchWindow: Duration = .milliseconds(5)
    static let batchBytes = 64 << 10
    /// The longest a warning waits for stderr; after such a wait runs out, warnings for the next
    /// `stalledPeriod` do not wait at all.
    static let immediateWait: Duration = .seconds(1)
    static let stalledPeriod: Duration = .seconds(10)
    /// The longest `stopBackgroundWriter` waits for queued lines to be written.
    static let stopWait: Duration = .seconds(5)

    private let fd: Int32
    /// Past this many buffered bytes (the reader of stderr is not keeping up), lines are dropped and counted.
    private let bufferLimit: Int
    private let condition = MonotonicCondition()
    private let writeLock = NSLock()
    // Guarded by `condition`, so the dynamic exclusivity check of each access (a call per access) buys nothing.
    @exclusivity(unchecked) private var pending: [UInt8] = []
    private var dropped = 0
    private var format = LogFormat.text
    private var background = false
    private var stopped = false
    private var stalledAt: ContinuousClock.Instant?
    private let writerDone = MonotonicCondition()
    private var writerRunning = false

    /// The most a bounded write hands write(2) after poll(2) reports the descriptor writable.
    private let boundedChunk: Int

    init(fd: Int32, bufferLimit: Int = 4 << 20) {
        self.fd = fd
        self.bufferLimit = bufferLimit
        // A pipe that polls writable takes PIPE_BUF (4096) bytes without blocking (pipe(7)); a terminal
        // polls writable with far less room, so anything but a pipe gets small writes.
        var status = stat()
        let isPipe = fstat(fd, &status) == 0 && (status.st_mode & S_IFMT) == S_IFIFO
        boundedChunk = isPipe ? 4096 : 256
    }

    /// Writes the sink's own line (how many lines were dropped) in `format`, that of the lines it is given.
    func useFormat(_ format: LogFormat) {
        condition.lock()
        self.format = format
        condition.unlock()
    }

    /// Whether the lines given are JSON: the format of the last handler made for this sink.
    var writesJSON: Bool {
        condition.lock()
        defer { condition.unlock() }
        return format == .json
    }

    /// Queues `line`, or writes it (after anything queued) before returning when `immediately`.
    func write(_ line: [UInt8], immediately: Bool) {
        enqueue(count: line.count, immediately: immediately) { pending in
            // Into an empty queue the line goes as it is: its buffer becomes the queue's, and nothing is copied.
            if pending.isEmpty { pending = line } else { pending.append(contentsOf: line) }
        }
    }

    /// Queues a copy of `line`, or writes it before returning when `immediately`: for a line formatted in a
    /// temporary buffer, which costs no allocation of its own.
    func write(_ line: UnsafeBufferPointer<UInt8>, immediately: Bool) {
        enqueue(count: line.count, immediately: immediately) { pending in
            // A queue started with room for a batch's worth of lines takes the next ones without regrowing.
            if pending.isEmpty { pending.reserveCapacity(max(line.count, Self.initialQueueCapacity)) }
            pending.append(contentsOf: line)
        }
    }

    /// The room a queue starts with when a line is copied into it: about 20 request lines.
    static let initialQueueCapacity = 4 << 10

    /// `write`'s bookkeeping around `append`, which adds the `count` bytes of a line to the queue.
    private func enqueue(count: Int, immediately: Bool, _ append: (inout [UInt8]) -> Void) {
        condition.lock()
        let wait = immediately ? immediateWaitLocked() : nil
        if pending.count + count > bufferLimit {
            dropped += 1
            condition.unlock()
            if let wait { flush(waitingAtMost: wait) }
            return
        }
        let wasEmpty = pending.isEmpty
        append(&pending)
        let deferred = background && !immediately
        let crossedBatch = pending.count >= Self.batchBytes && pending.count - count < Self.batchBytes
        if deferred && (wasEmpty || crossedBatch) { condition.signal() }
        condition.unlock()
        if !deferred { flush(waitingAtMost: wait) }
    }

    /// Writes everything queued so far, on the calling thread; with `wait`, gives up after that long and
    /// leaves the rest queued (false).
    @discardableResult
    func flush(waitingAtMost wait: Duration? = nil) -> Bool {
        let deadline = wait.map { ContinuousClock.now + $0 }
        if let deadline {
            guard writeLock.lock(before: Self.date(of: deadline)) else { return stalled() }
        } else {
            writeLock.lock()
        }
        defer { writeLock.unlock() }
        condition.lock()
        var batch = pending
        pending = []
        if dropped > 0 {
            appendDropNotice(to: &batch)
            dropped = 0
        }
        condition.unlock()
        let written = writeAll(batch, before: deadline)
        guard written < batch.count else { return true }
        // What the deadline left unwritten goes back ahead of the lines queued since, for the writer thread.
        condition.lock()
        pending = Array(batch[written...]) + pending
        if background { condition.signal() }
        condition.unlock()
        return stalled()
    }
    /// Starts the writer thread; lines below warning are batched from now on.
    func startBackgroundWriter() {
        condition.lock()
        defer { condition.unlock() }
        guard !background, !stopped else { return }
        background = true
        writerDone.lock()
        writerRunning = true
        writerDone.unlock()
        let thread = Thread { [self] in
            runWriter()
        }
        thread.name = "log-writer"
        thread.start()
    }

    /// Writes what is queued, stops the writer thread and writes on the caller's thread from then on;
    /// waits at most `stopWait` for a stalled stderr, so that shutdown cannot hang on it.
    func stopBackgroundWriter() {
        let deadline = ContinuousClock.now + Self.stopWait
        condition.lock()
        stopped = true
        background = false
        condition.signal()
        condition.unlock()
        writerDone.lock()
        while writerRunning && writerDone.wait(for: deadline - ContinuousClock.now) {}
        writerDone.unlock()
        flush(waitingAtMost: max(.zero, deadline - ContinuousClock.now))
    }

    private func runWriter() {
        while true {
            condition.lock()
            while pending.isEmpty && dropped == 0 && !stopped { condition.wait() }
            // Lines that arrive within a few milliseconds share one write(2) and one wake-up of this
            // thread; no signal comes meanwhile, since only a line into an empty buffer signals.
            if !stopped && pending.count < Self.batchBytes {
                condition.wait(for: Self.batchWindow)
            }
            let exiting = stopped
            condition.unlock()
            flush()
            if exiting { break }
        }
        writerDone.lock()
        writerRunning = false
        writerDone.broadcast()
        writerDone.unlock()
    }

    /// Writes `bytes`, before `deadline` if one is given; returns how many were written (all of them, too,
    /// when stderr fails for good: such lines cannot be written later either).
    private func writeAll(_ bytes: [UInt8], before deadline: ContinuousClock.Instant?) -> Int {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                var chunk = buffer.count - offset
                if let deadline {
                    // Past the deadline poll(2) still looks once (timeout 0): a stderr that drained is written.
                    let remaining = max(.zero, deadline - ContinuousClock.now)
                    var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    let ready = poll(&descriptor, 1, Int32(clamping: (remaining.nanoseconds + 999_999) / 1_000_000))
                    if ready < 0 && errno == EINTR { continue }
                    guard ready > 0 else { return offset }
                    chunk = min(chunk, boundedChunk)
                }
                let written = Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, chunk)
                if written < 0 && errno == EINTR { continue }
                if written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    // O_NONBLOCK is shared by every process on the open file (open(2)): a parent may have set it on
                    // our stderr. Full, it is waited for as a blocking one would be, or until the deadline (above).
                    if deadline == nil {
                        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                        _ = poll(&descriptor, 1, -1)
                    }
                    continue
                }
                if written <= 0 { return buffer.count }
                offset += written
            }
            return offset
        }
    }

    /// Appends the line that says how many lines were dropped; with `condition` locked.
    private func appendDropNotice(to batch: inout [UInt8]) {
        let message = "log: \(dropped) lines dropped (stderr was not read fast enough)"
        switch format {
        case .text:
            batch.append(contentsOf: message.utf8)
        case .json:
            // A JSON line like the handler's, so that a shipper that parses every line parses this one too.
            var json = JSONWriter(capacity: 160)
            json.beginObject()
            json.knownKey("level")
            json.string("warning")
            json.knownKey("logger")
            json.string("log")
            json.knownKey("msg")
            json.string(message)
            json.knownKey("ts")
            json.string(appending: { RFC3339.appendMilliseconds(.now(), to: &$0) })
            json.endObject()
            batch.append(contentsOf: json.bytes)
        }
        batch.append(UInt8(ascii: "\n"))
    }

    /// How long a warning may wait now: not at all within `stalledPeriod` of a wait that ran out.
    private func immediateWaitLocked() -> Duration {
        if let stalledAt, ContinuousClock.now - stalledAt < Self.stalledPeriod { return .zero }
        return Self.immediateWait
    }

    private func stalled() -> Bool {
        condition.lock()
        stalledAt = ContinuousClock.now
        condition.unlock()
        return false
    }

    private static func date(of instant: ContinuousClock.Instant) -> Date {
        Date(timeIntervalSinceNow: Double((instant - ContinuousClock.now).nanoseconds) / 1e9)
    }
}
