import Glibc
import HTTPServer
import Logging
import Synchronization

/// The trivial responder the benchmarks measure: `GET /healthz` like the Hummingbird baseline.
struct BenchResponder: HTTPResponder {
    func respond(to request: HTTPRequest) throws -> HTTPResponse {
        guard request.path == "/healthz" else { return HTTPResponse(status: 404) }
        var headers = HTTPHeaders()
        headers.add("Content-Type", "text/plain; charset=utf-8")
        return HTTPResponse(status: 200, headers: headers, body: Array("{\"status\":\"ok\"}".utf8))
    }
}

/// Counts what the server reports, printed at exit so a benchmark run shows refusals and errors.
final class CountingObserver: HTTPServerObserver {
    let counts = Mutex<[String: Int]>([:])

    func bump(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }
    func connectionOpened(peer: String) { bump("connections.opened") }
    func connectionClosed(peer: String) { bump("connections.closed") }
    func connectionRefused(peer: String) { bump("connections.refused") }
    func protocolError(_ error: HTTPProtocolError) { bump("protocol_error.\(error)") }
    func requestShed() { bump("requests.shed") }
}

func environment(_ name: String) -> Int? {
    getenv(name).flatMap { Int(String(cString: $0)) }
}

var configuration = HTTPServerConfiguration(host: "127.0.0.1", port: environment("PORT") ?? 8091)
if let loops = environment("EVENT_LOOPS") { configuration.eventLoopThreads = loops }
if let workers = environment("WORKERS") { configuration.workerThreads = workers }
if let maxConnections = environment("MAX_CONNECTIONS") { configuration.maxConnections = maxConnections }
configuration.maxRequestsPerConnection = environment("MAX_REQUESTS_PER_CONNECTION") ?? 1_000_000

var logger = Logger(label: "bench")
logger.logLevel = .notice
let observer = getenv("COUNT_EVENTS") == nil ? nil : CountingObserver()
let server = HTTPServer(configuration: configuration, responder: BenchResponder(), logger: logger, observer: observer)
do {
    let port = try server.start()
    let line = Array("listening on \(port)\n".utf8)
    _ = line.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
} catch {
    print("failed to start: \(error)")
    exit(1)
}

// Block until SIGINT or SIGTERM, then shut down gracefully.
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGINT)
sigaddset(&signals, SIGTERM)
pthread_sigmask(SIG_BLOCK, &signals, nil)
var received: Int32 = 0
sigwait(&signals, &received)
server.shutdown()
if let observer {
    for (key, value) in observer.counts.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
        print("\(key) \(value)")
    }
}
