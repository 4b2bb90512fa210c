import CEpoll
import Glibc

/// Why the server could not start.
public enum HTTPServerError: Error, Sendable, Equatable {
    /// `start()` was called twice, or after `shutdown()`.
    case alreadyStarted
    /// The configured host is not an IPv4 or IPv6 address.
    case invalidHost(String)
    /// The configured port is outside 0...65535.
    case invalidPort(Int)
    /// A system call failed with this errno.
    case systemCallFailed(String, errno: Int32)
    /// Binding or listening on the configured address failed with this errno (in use, not local, no permission).
    case cannotListen(host: String, port: Int, errno: Int32)
    /// The TLS certificate chain file cannot be read or used; `reason` is OpenSSL's.
    case tlsCertificateUnusable(path: String, reason: String)
    /// The TLS private key file cannot be read or used; `reason` is OpenSSL's.
    case tlsPrivateKeyUnusable(path: String, reason: String)
    /// The TLS private key file is passphrase-protected, which the server cannot use.
    case tlsPrivateKeyEncrypted(path: String)
    /// The private key does not belong to the certificate.
    case tlsKeyDoesNotMatchCertificate
    /// OpenSSL could not set up a TLS context; `reason` is OpenSSL's.
    case tlsSetupFailed(reason: String)
    /// `reloadTLS()` was called on a server configured without TLS.
    case tlsNotConfigured
}

extension HTTPServerError: CustomStringConvertible {
    /// A sentence for the operator.
    public var description: String {
        switch self {
        case .alreadyStarted: "the server was already started"
        case .invalidHost(let host): "not an IPv4 or IPv6 address: \(host)"
        case .invalidPort(let port): "port \(port) is outside 0...65535"
        case .systemCallFailed(let call, let code): "\(call) failed: \(String(cString: strerror(code)))"
        case .cannotListen(let host, let port, let code):
            "cannot listen on \(host.contains(":") ? "[\(host)]" : host):\(port): \(String(cString: strerror(code)))"
        case .tlsCertificateUnusable(let path, let reason): "cannot use TLS certificate chain \(path): \(reason)"
        case .tlsPrivateKeyUnusable(let path, let reason): "cannot use TLS private key \(path): \(reason)"
        case .tlsPrivateKeyEncrypted(let path):
            "the TLS private key \(path) is encrypted (passphrase-protected); give an unencrypted key, e.g. from openssl pkey -in \(path) -out NEW"
        case .tlsKeyDoesNotMatchCertificate: "the TLS private key does not match the certificate"
        case .tlsSetupFailed(let reason): "cannot set up TLS: \(reason)"
        case .tlsNotConfigured: "the server has no TLS configuration"
        }
    }
}

enum Sockets {
    /// Binds and listens on a non-blocking socket; returns it and the port the kernel bound.
    static func listen(host: String, port: Int, backlog: Int) throws(HTTPServerError) -> (fd: Int32, port: Int) {
        guard (0...65535).contains(port) else { throw .invalidPort(port) }
        var storage = sockaddr_storage()
        let length: socklen_t
        let family: Int32
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            family = AF_INET
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr = v4
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in.self) }
        } else if inet_pton(AF_INET6, host, &v6) == 1 {
            family = AF_INET6
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = in_port_t(UInt16(port).bigEndian)
            address.sin6_addr = v6
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in6.self) }
        } else {
            throw .invalidHost(host)
        }

        let fd = socket(family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .systemCallFailed("socket", errno: errno) }
        var one: Int32 = 1
        // SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let code = errno
            close(fd)
            throw .cannotListen(host: host, port: port, errno: code)
        }
        guard Glibc.listen(fd, Int32(clamping: backlog)) == 0 else {
            let code = errno
            close(fd)
            throw .cannotListen(host: host, port: port, errno: code)
        }
        var actual = sockaddr_storage()
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &actualLength) }
        }
        return (fd, Int(describe(actual).port))
    }

    /// Accepts one pending connection as a non-blocking socket; nil when none is pending.
    static func accept(_ listener: Int32) -> (fd: Int32, peer: String)?? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept4(listener, $0, &length, Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue))
                }
            }
            if fd >= 0 {
                var one: Int32 = 1
                // Responses go out in one send; Nagle would only delay the last segment.
                _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let peer = describe(storage)
                return .some((fd, peer.host + ":" + String(peer.port)))
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            // accept(2): these report a connection that died before it was accepted; try the next.
            case ECONNABORTED, EPROTO, EPERM: continue
            // Out of descriptors or memory: report it so the loop backs off instead of spinning.
            default: return .some(nil)
            }
        }
    }

    static func describe(_ storage: sockaddr_storage) -> (host: String, port: UInt16) {
        var storage = storage
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { raw in
                var address = raw.load(as: sockaddr_in.self)
                _ = inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
                return (
                    String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self),
                    UInt16(bigEndian: address.sin_port)
                )
            }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { raw in
                var address = raw.load(as: sockaddr_in6.self)
                _ = inet_ntop(AF_INET6, &address.sin6_addr, &text, socklen_t(text.count))
                let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                return ("[" + host + "]", UInt16(bigEndian: address.sin6_port))
            }
        default:
            return ("unknown", 0)
        }
    }

    /// Raises the soft open-files limit to the hard limit, so many connections can be open at once.
    static func raiseFileDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }
}

/// A monotonic clock in nanoseconds, for deadlines and durations.
enum MonotonicClock {
    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }

    /// Nanoseconds from `start` to `now`; zero if another thread stamped `start` after `now` was read.
    static func elapsed(since start: UInt64, now: UInt64) -> UInt64 {
        now > start ? now - start : 0
    }
}
