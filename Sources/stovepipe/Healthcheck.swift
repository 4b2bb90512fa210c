import ArgumentParser
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `stovepipe healthcheck`: the container HEALTHCHECK, so the image needs no curl.
struct Healthcheck: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Exit 0 when the health URL answers 200, 1 otherwise.")

    @Option(help: "An http://127.0.0.1:PORT/PATH URL to GET.") var url = "http://127.0.0.1:8080/healthz"
    @Option(help: "Seconds to wait for the answer.") var timeout: Double = 3

    func run() throws {
        guard let parsed = URL(string: url), parsed.scheme == "http", let host = parsed.host else {
            throw ValidationError("--url must be an http:// URL")
        }
        let status = try Self.get(host: host, port: parsed.port ?? 80, path: parsed.path.isEmpty ? "/" : parsed.path, timeout: timeout)
        guard status == 200 else {
            print("unhealthy: HTTP \(status)")
            throw ExitCode(1)
        }
        print("healthy")
    }

    /// One GET over a blocking socket with send and receive timeouts; returns the status code.
    static func get(host: String, port: Int, path: String, timeout: Double) throws -> Int {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw ValidationError("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { throw ExitCode(1) }
        defer { close(fd) }
        var limit = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            print("unhealthy: cannot connect to \(host):\(port)")
            throw ExitCode(1)
        }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw ExitCode(1)
        }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 12 else {
            print("unhealthy: no answer")
            throw ExitCode(1)
        }
        let statusLine = String(decoding: buffer[0..<count], as: UTF8.self).prefix { $0 != "\r" }
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw ExitCode(1) }
        return status
    }
}
