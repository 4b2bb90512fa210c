import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `stovepipe healthcheck`: the container HEALTHCHECK, so the image needs no curl.
struct Healthcheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when the health URL answers 200, 1 otherwise.",
        discussion: """
            https:// URLs verify the server's certificate against the system trust store and the URL's host; \
            --ca-file trusts one CA or self-signed certificate instead, --server-name checks the certificate \
            against another name than the URL's host (a loopback probe of a server whose certificate names its \
            public host), and --insecure skips verification.
            """)

    @Option(help: "An http:// or https:// URL to GET.") var url = "http://127.0.0.1:8080/healthz"
    @Option(help: "Seconds to wait for the connection and for each read and write.") var timeout: Double = 3
    @Option(help: "https: trust this PEM CA bundle or self-signed certificate instead of the system store.")
    var caFile: String?
    @Option(help: "https: the name the certificate must carry, also sent as SNI, instead of the URL's host.")
    var serverName: String?
    @Flag(help: "https: do not verify the certificate or its name.") var insecure = false

    func validate() throws {
        _ = try target()
    }

    func run() throws {
        let target = try target()
        let status: Int
        do {
            status = try HealthProbe(target: target, timeout: timeout).status()
        } catch {
            print("unhealthy: \(error)")
            throw ExitCode(1)
        }
        guard status == 200 else {
            print("unhealthy: HTTP \(status)")
            throw ExitCode(1)
        }
        print("healthy")
    }

    private func target() throws -> HealthTarget {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be more than 0 and at most 3600 seconds") }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            let rawHost = components.host, !rawHost.isEmpty
        else {
            throw ValidationError("--url must be an http:// or https:// URL with a host")
        }
        // RFC 3986 §3.2.2: an IPv6 literal is written in brackets, which are not part of the address.
        let host = rawHost.hasPrefix("[") && rawHost.hasSuffix("]") ? String(rawHost.dropFirst().dropLast()) : rawHost
        var path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { path += "?" + query }
        let transport: HealthTarget.Transport
        switch scheme {
        case "http":
            guard caFile == nil, !insecure, serverName == nil else {
                throw ValidationError("--ca-file, --insecure and --server-name apply to https:// URLs only")
            }
            transport = .plain
        case "https":
            switch (caFile, insecure) {
            case (.some, true): throw ValidationError("--ca-file and --insecure exclude each other")
            case (.some(let file), false): transport = .tls(.caFile(file))
            case (.none, true): transport = .tls(.disabled)
            case (.none, false): transport = .tls(.systemTrustStore)
            }
        default:
            throw ValidationError("--url must be an http:// or https:// URL")
        }
        let port = components.port ?? (transport == .plain ? 80 : 443)
        guard (1...65535).contains(port) else { throw ValidationError("--url has an invalid port") }
        if let serverName, !Self.isServerName(serverName) {
            throw ValidationError("--server-name must be a DNS name or an IP address")
        }
        return HealthTarget(host: host, port: port, path: path, transport: transport, serverName: serverName ?? host)
    }

    /// A DNS name (RFC 1035 §2.3.4: at most 253 characters of letters, digits, hyphens and dots) or an IP
    /// address literal (digits, hex letters, dots and colons): what SNI and name verification can take.
    static func isServerName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: ":"):
                true
            default:
                false
            }
        }
    }
}

/// Where the health request goes and how.
struct HealthTarget: Equatable {
    /// The transport under the HTTP exchange.
    enum Transport: Equatable {
        case plain
        case tls(TLSVerification)
    }

    /// What the TLS client accepts as the server's certificate.
    enum TLSVerification: Equatable {
        case systemTrustStore
        case caFile(String)
        case disabled
    }

    let host: String
    let port: Int
    let path: String
    let transport: Transport
    /// The name TLS sends as SNI and verifies the certificate against: `--server-name`, else `host`.
    let serverName: String

    /// The authority as the Host header carries it (RFC 9110 §7.2), brackets around an IPv6 literal.
    var authority: String {
        let name = host.contains(":") ? "[\(host)]" : host
        let defaultPort = transport == .plain ? 80 : 443
        return port == defaultPort ? name : "\(name):\(port)"
    }
}

/// Why a health probe got no status; the description is the text after `unhealthy: `.
enum HealthcheckFailure: Error, CustomStringConvertible {
    case unresolvable(host: String, reason: String)
    case connectFailed(endpoint: String, reason: String)
    case timedOut(endpoint: String, seconds: Double)
    case sendFailed(endpoint: String, reason: String)
    case receiveFailed(endpoint: String, reason: String)
    case closedWithoutAnswer(endpoint: String)
    case notHTTP(endpoint: String)
    case tlsSetupFailed(reason: String)
    case caFileUnusable(path: String, reason: String)
    case handshakeFailed(endpoint: String, reason: String)
    case certificateRejected(host: String, reason: String)
    case certificateNameMismatch(host: String, reason: String)

    var description: String {
        switch self {
        case .unresolvable(let host, let reason): "cannot resolve \(host): \(reason)"
        case .connectFailed(let endpoint, let reason): "cannot connect to \(endpoint): \(reason)"
        case .timedOut(let endpoint, let seconds):
            "no answer from \(endpoint) within \(seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)) s"
        case .sendFailed(let endpoint, let reason): "cannot send the request to \(endpoint): \(reason)"
        case .receiveFailed(let endpoint, let reason): "cannot read the answer from \(endpoint): \(reason)"
        case .closedWithoutAnswer(let endpoint): "\(endpoint) closed the connection without an answer"
        case .notHTTP(let endpoint): "\(endpoint) did not answer with an HTTP status line"
        case .tlsSetupFailed(let reason): "cannot set up TLS: \(reason)"
        case .caFileUnusable(let path, let reason): "cannot use --ca-file \(path): \(reason)"
        case .handshakeFailed(let endpoint, let reason): "TLS handshake with \(endpoint) failed: \(reason)"
        case .certificateRejected(let host, let reason):
            "certificate verification failed for \(host): \(reason) (trust it with --ca-file, or skip the check with --insecure)"
        case .certificateNameMismatch(let host, let reason):
            "certificate verification failed for \(host): \(reason) (the certificate does not name \(host); --server-name checks another name, --insecure skips the check)"
        }
    }
}

/// A connected byte stream the health request travels over: the socket itself, or TLS on it.
protocol HealthcheckTransport {
    /// Writes all of `bytes`.
    func write(_ bytes: [UInt8]) throws(HealthcheckFailure)
    /// Reads what is available into `buffer`, waiting up to the timeout; 0 at the end of the stream.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(HealthcheckFailure) -> Int
}

/// One GET over a fresh connection, plain or TLS; the HTTP part is the same for both.
struct HealthProbe {
    let target: HealthTarget
    let timeout: Double

    /// Longest answer head read while looking for the status line.
    private static let statusLineLimit = 8192

    /// Connects, sends the request and returns the answer's status code.
    func status() throws(HealthcheckFailure) -> Int {
        switch target.transport {
        case .plain:
            let socket = try HealthcheckSocket.connect(host: target.host, port: target.port, timeout: timeout)
            return try exchange(over: socket)
        case .tls(let verification):
            // OpenSSL's socket BIO writes with write(2), not send(MSG_NOSIGNAL): a server that has
            // already closed would otherwise kill this process with SIGPIPE instead of an answer.
            signal(SIGPIPE, SIG_IGN)
            // Built before connecting, so an unusable --ca-file is reported as such.
            let context = try HealthcheckTLSContext(verification: verification)
            let socket = try HealthcheckSocket.connect(host: target.host, port: target.port, timeout: timeout)
            let connection = try HealthcheckTLSConnection(context: context, socket: socket, host: target.serverName)
            defer { connection.close() }
            return try exchange(over: connection)
        }
    }

    /// The request bytes: `Connection: close` (RFC 9112 §9.6), so the server needs no keep-alive state for us.
    var request: [UInt8] {
        Array("GET \(target.path) HTTP/1.1\r\nHost: \(target.authority)\r\nUser-Agent: stovepipe-healthcheck\r\nConnection: close\r\n\r\n".utf8)
    }

    private func exchange(over transport: some HealthcheckTransport) throws(HealthcheckFailure) -> Int {
        try transport.write(request)
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while !Self.hasLineEnd(received) && received.count < Self.statusLineLimit {
            let count = try Self.read(from: transport, into: &chunk)
            if count == 0 { break }
            received += chunk[0..<count]
        }
        guard !received.isEmpty else { throw .closedWithoutAnswer(endpoint: target.endpoint) }
        guard let status = Self.parseStatus(received) else { throw .notHTTP(endpoint: target.endpoint) }
        return status
    }

    private static func read(from transport: some HealthcheckTransport, into chunk: inout [UInt8]) throws(HealthcheckFailure) -> Int {
        let outcome: Result<Int, HealthcheckFailure> = chunk.withUnsafeMutableBytes { buffer in
            do throws(HealthcheckFailure) {
                return .success(try transport.read(into: buffer))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    private static func hasLineEnd(_ bytes: [UInt8]) -> Bool {
        bytes.indices.dropLast().contains { bytes[$0] == 13 && bytes[$0 + 1] == 10 }
    }

    /// The status code of an RFC 9112 §4 status line, `HTTP/1.x SP 3DIGIT SP [reason]`, or nil.
    static func parseStatus(_ bytes: [UInt8]) -> Int? {
        let line = bytes.prefix { $0 != 13 && $0 != 10 }
        let text = String(decoding: line, as: UTF8.self)
        let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1].count == 3,
            parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let status = Int(parts[1])
        else { return nil }
        return status
    }
}

extension HealthTarget {
    /// `host:port` for messages.
    var endpoint: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A blocking TCP socket connected with a timeout, with send and receive timeouts; closed on deinit.
final class HealthcheckSocket: HealthcheckTransport {
    let fd: Int32
    let endpoint: String
    let timeout: Double

    private init(fd: Int32, endpoint: String, timeout: Double) {
        self.fd = fd
        self.endpoint = endpoint
        self.timeout = timeout
    }

    deinit { Glibc.close(fd) }

    /// Tries each address of `host` in turn until one accepts.
    static func connect(host: String, port: Int, timeout: Double) throws(HealthcheckFailure) -> HealthcheckSocket {
        let endpoint = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &result)
        guard resolved == 0, let first = result else {
            throw .unresolvable(host: host, reason: String(cString: gai_strerror(resolved)))
        }
        defer { freeaddrinfo(first) }
        var lastFailure = HealthcheckFailure.connectFailed(endpoint: endpoint, reason: "no address")
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let info = next {
            next = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            guard fd >= 0 else {
                lastFailure = .connectFailed(endpoint: endpoint, reason: String(cString: strerror(errno)))
                continue
            }
            let connection = HealthcheckSocket(fd: fd, endpoint: endpoint, timeout: timeout)
            // At least a microsecond: a zero SO_RCVTIMEO or SO_SNDTIMEO means no timeout at all (socket(7)).
            let microseconds = max(1, Int((timeout * 1_000_000).rounded(.up)))
            var limit = timeval(tv_sec: microseconds / 1_000_000, tv_usec: microseconds % 1_000_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            // Linux's connect(2) on a blocking socket also gives up after SO_SNDTIMEO, with EINPROGRESS.
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return connection }
            let number = errno
            lastFailure =
                number == EINPROGRESS || number == EAGAIN
                ? .timedOut(endpoint: endpoint, seconds: timeout)
                : .connectFailed(endpoint: endpoint, reason: String(cString: strerror(number)))
        }
        throw lastFailure
    }

    func write(_ bytes: [UInt8]) throws(HealthcheckFailure) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw failure(errno, sending: true) }
            sent += count
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(HealthcheckFailure) -> Int {
        let count = recv(fd, buffer.baseAddress, buffer.count, 0)
        guard count >= 0 else { throw failure(errno, sending: false) }
        return count
    }

    /// What a failed send or receive means; EAGAIN is an expired SO_SNDTIMEO or SO_RCVTIMEO (socket(7)).
    func failure(_ number: Int32, sending: Bool) -> HealthcheckFailure {
        if number == EAGAIN || number == EWOULDBLOCK { return .timedOut(endpoint: endpoint, seconds: timeout) }
        let reason = String(cString: strerror(number))
        return sending ? .sendFailed(endpoint: endpoint, reason: reason) : .receiveFailed(endpoint: endpoint, reason: reason)
    }
}
