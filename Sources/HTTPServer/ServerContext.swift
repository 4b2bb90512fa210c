import Glibc
import Logging
import Synchronization

/// What every loop, connection and worker of one server shares.
final class ServerContext: Sendable {
    let configuration: HTTPServerConfiguration
    let limits: HTTPParserLimits
    let responder: any HTTPResponder
    let observer: (any HTTPServerObserver)?
    let logger: Logger
    let pool: WorkerPool<WorkItem>
    let headerTimeout: UInt64
    let bodyTimeout: UInt64
    let idleTimeout: UInt64
    let queueTimeout: UInt64
    /// Nil for plain HTTP.
    let tls: TLSContextStore?
    let handshakeTimeout: UInt64
    /// How long a closing connection keeps draining input after its last response (RFC 9112 §9.6).
    let lingerTimeout: UInt64
    /// How much input a lingering connection drops before it closes anyway: twice the largest body, at least 1 MiB,
    /// so a client still sending a body (after a 413, or refused) finishes and reads the answer.
    let lingerByteLimit: Int
    /// Input a connection buffers while its request is being handled before it stops reading.
    let pausedReadLimit: Int
    let openConnections = Atomic<Int>(0)
    let draining = Atomic<Bool>(false)
    private let requestCounter = Atomic<UInt64>(0)
    private let requestIDPrefix: String

    init(
        configuration: HTTPServerConfiguration, responder: any HTTPResponder, observer: (any HTTPServerObserver)?,
        logger: Logger
    ) {
        self.configuration = configuration
        self.limits = configuration.parserLimits
        self.responder = responder
        self.observer = observer
        self.logger = logger
        self.pool = WorkerPool(capacity: configuration.workerQueueCapacity)
        self.headerTimeout = max(1_000_000, configuration.headerTimeout.nanoseconds)
        self.bodyTimeout = max(1_000_000, configuration.bodyTimeout.nanoseconds)
        self.idleTimeout = max(1_000_000, configuration.idleTimeout.nanoseconds)
        self.queueTimeout = max(1_000_000, configuration.queueTimeout.nanoseconds)
        self.tls = configuration.tls.map(TLSContextStore.init(configuration:))
        self.handshakeTimeout = max(1_000_000, configuration.tls?.handshakeTimeout.nanoseconds ?? 0)
        self.lingerTimeout = min(2_000_000_000, idleTimeout)
        let (twoBodies, bodiesOverflow) = limits.maxBodyBytes.multipliedReportingOverflow(by: 2)
        self.lingerByteLimit = bodiesOverflow ? .max : max(1024 * 1024, twoBodies)
        // Limits may be as large as Int allows (`--max-header-bytes 9223372036854775807`): the sum saturates.
        let (lineAndHead, headOverflow) = limits.maxRequestLineBytes.addingReportingOverflow(limits.maxHeaderBytes)
        let (paused, slackOverflow) = lineAndHead.addingReportingOverflow(4096)
        self.pausedReadLimit = headOverflow || slackOverflow ? .max : paused
        var generator = SystemRandomNumberGenerator()
        let random = generator.next() as UInt64
        self.requestIDPrefix = String(random & 0xFFFF_FFFF_FFFF, radix: 16)
    }

    /// How often loops check deadlines: a quarter of the shortest timeout, within 10 ms...1 s.
    var tickNanoseconds: UInt64 {
        let shortest = min(headerTimeout, bodyTimeout, idleTimeout, tls == nil ? UInt64.max : handshakeTimeout)
        return min(1_000_000_000, max(10_000_000, shortest / 4))
    }

    /// A fresh request id: a per-process random prefix and a counter in base 36.
    func makeRequestID() -> String {
        Self.requestID(prefix: requestIDPrefix, sequence: requestCounter.add(1, ordering: .relaxed).newValue)
    }

    /// `prefix-sequence`, the sequence in lowercase base 36 (`String(_:radix:)` without its generic cost).
    static func requestID(prefix: String, sequence: UInt64) -> String {
        let prefix = prefix.utf8
        // 13 base-36 digits hold any UInt64.
        return String(unsafeUninitializedCapacity: prefix.count + 1 + 13) { buffer in
            var end = buffer.initialize(fromContentsOf: prefix)
            buffer[end] = UInt8(ascii: "-")
            end += 1
            let digitsStart = end
            var rest = sequence
            repeat {
                let digit = UInt8(rest % 36)
                buffer[end] = digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10
                end += 1
                rest /= 36
            } while rest > 0
            buffer[digitsStart..<end].reverse()
            return end
        }
    }

    /// Whether an incoming `X-Request-ID` may be reused: 1-128 of `[A-Za-z0-9._-]`.
    static func isSaneRequestID(_ value: String) -> Bool {
        let bytes = value.utf8
        guard (1...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): true
            default: false
            }
        }
    }
}
