import API
import Foundation
import Logging

/// How log lines are written to stderr.
enum LogFormat: String, CaseIterable, Sendable {
    case text
    case json
}

/// Writes one line per event to stderr, as text or as a JSON object (for log shippers).
struct StderrLogHandler: LogHandler {
    let label: String
    let format: LogFormat
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let sink: LogSink

    init(label: String, format: LogFormat, logLevel: Logger.Level, sink: LogSink = .standardError) {
        self.label = label
        self.format = format
        self.logLevel = logLevel
        self.sink = sink
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.sorted { $0.key < $1.key }
        var line: [UInt8] = []
        line.reserveCapacity(256)
        switch format {
        case .json:
            var json = JSONWriter(capacity: 256)
            json.beginObject()
            // Fixed members first, then the metadata by key; a metadata key equal to a fixed one is
            // prefixed so that no line carries a duplicate member (RFC 8259 §4: names SHOULD be unique).
            json.key("level")
            json.string(event.level.rawValue)
            json.key("logger")
            json.string(label)
            json.key("msg")
            json.string(event.message.description)
            var timestamp: [UInt8] = []
            RFC3339.append(Date(), fractionDigits: 3, to: &timestamp)
            json.key("ts")
            json.string(String(decoding: timestamp, as: UTF8.self))
            for (key, value) in fields {
                json.key(Self.reservedJSONKeys.contains(key) ? "meta." + key : key)
                Self.write(value, to: &json)
            }
            json.endObject()
            line = json.bytes
        case .text:
            RFC3339.append(Date(), fractionDigits: 3, to: &line)
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: event.level.rawValue.uppercased().utf8)
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: label.utf8)
            line.append(contentsOf: ": ".utf8)
            line.append(contentsOf: event.message.description.utf8)
            for (key, value) in fields {
                line.append(UInt8(ascii: " "))
                line.append(contentsOf: key.utf8)
                line.append(UInt8(ascii: "="))
                line.append(contentsOf: value.description.utf8)
            }
        }
        line.append(UInt8(ascii: "\n"))
        // Warnings and worse go out before log() returns: they often precede an exit.
        sink.write(line, immediately: event.level >= .warning)
    }

    private static let reservedJSONKeys: Set<String> = ["level", "logger", "msg", "ts"]

    private static func write(_ value: Logger.Metadata.Value, to json: inout JSONWriter) {
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
// @unchecked Sendable: `pending`, `dropped`, `background` and `stopped` are only read or written with
// `condition` locked; `writeLock` serialises the write(2) calls so batches never interleave.
final class LogSink: @unchecked Sendable {
    /// The process's stderr.
    static let standardError = LogSink(fd: STDERR_FILENO)

    /// How long the writer collects lines before writing them, unless `batchBytes` are waiting sooner.
    static let batchWindow: TimeInterval = 0.005
    static let batchBytes = 64 << 10

    private let fd: Int32
    /// Past this many buffered bytes (the reader of stderr is not keeping up), lines are dropped and counted.
    private let bufferLimit: Int
    private let condition = NSCondition()
    private let writeLock = NSLock()
    private var pending: [UInt8] = []
    private var dropped = 0
    private var background = false
    private var stopped = false
    private let writerDone = NSCondition()
    private var writerRunning = false

    init(fd: Int32, bufferLimit: Int = 4 << 20) {
        self.fd = fd
        self.bufferLimit = bufferLimit
    }

    /// Queues `line`, or writes it (after anything queued) before returning when `immediately`.
    func write(_ line: [UInt8], immediately: Bool) {
        condition.lock()
        if pending.count + line.count > bufferLimit {
            dropped += 1
            condition.unlock()
            if immediately { flush() }
            return
        }
        let wasEmpty = pending.isEmpty
        pending.append(contentsOf: line)
        let deferred = background && !immediately
        let crossedBatch = pending.count >= Self.batchBytes && pending.count - line.count < Self.batchBytes
        if deferred && (wasEmpty || crossedBatch) { condition.signal() }
        condition.unlock()
        if !deferred { flush() }
    }

    /// Writes everything queued so far, on the calling thread.
    func flush() {
        writeLock.lock()
        defer { writeLock.unlock() }
        condition.lock()
        var batch = pending
        pending = []
        if dropped > 0 {
            batch.append(contentsOf: "log: \(dropped) lines dropped (stderr was not read fast enough)\n".utf8)
            dropped = 0
        }
        condition.unlock()
        writeAll(batch)
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

    /// Writes what is queued, stops the writer thread and writes on the caller's thread from then on.
    func stopBackgroundWriter() {
        condition.lock()
        stopped = true
        background = false
        condition.signal()
        condition.unlock()
        writerDone.lock()
        while writerRunning { writerDone.wait() }
        writerDone.unlock()
        flush()
    }

    private func runWriter() {
        while true {
            condition.lock()
            while pending.isEmpty && dropped == 0 && !stopped { condition.wait() }
            // Lines that arrive within a few milliseconds share one write(2) and one wake-up of this
            // thread; no signal comes meanwhile, since only a line into an empty buffer signals.
            if !stopped && pending.count < Self.batchBytes {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Self.batchWindow))
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

    private func writeAll(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { break }
                offset += written
            }
        }
    }
}
