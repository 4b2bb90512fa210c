import COpenSSL
import Glibc

/// A client SSL_CTX for one health probe: TLS 1.2 or later, and the trust the command line asked for.
final class HealthcheckTLSContext {
    let pointer: OpaquePointer
    let verification: HealthTarget.TLSVerification

    init(verification: HealthTarget.TLSVerification) throws(HealthcheckFailure) {
        ERR_clear_error()
        guard let pointer = SSL_CTX_new(TLS_client_method()) else {
            throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
        }
        self.pointer = pointer
        self.verification = verification
        guard stovepipe_SSL_CTX_set_min_proto_version(pointer, TLS1_2_VERSION) == 1 else {
            throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
        }
        _ = stovepipe_SSL_CTX_set_client_options(pointer)
        switch verification {
        case .systemTrustStore:
            guard SSL_CTX_set_default_verify_paths(pointer) == 1 else {
                throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
            }
            SSL_CTX_set_verify(pointer, SSL_VERIFY_PEER, nil)
        case .caFile(let path):
            // Replaces the system store, as curl's --cacert does: only this file's certificates are trusted.
            guard SSL_CTX_load_verify_locations(pointer, path, nil) == 1 else {
                throw .caFileUnusable(path: path, reason: HealthcheckOpenSSLErrors.drain())
            }
            SSL_CTX_set_verify(pointer, SSL_VERIFY_PEER, nil)
        case .disabled:
            SSL_CTX_set_verify(pointer, SSL_VERIFY_NONE, nil)
        }
    }

    deinit { SSL_CTX_free(pointer) }
}

/// TLS over a connected blocking socket; the handshake, verification included, runs in `init`.
final class HealthcheckTLSConnection: HealthcheckTransport {
    private let ssl: OpaquePointer
    // Kept for the life of the SSL*, which reads and writes the socket's descriptor.
    private let socket: HealthcheckSocket
    private let context: HealthcheckTLSContext
    private let host: String

    init(context: HealthcheckTLSContext, socket: HealthcheckSocket, host: String) throws(HealthcheckFailure) {
        ERR_clear_error()
        guard let ssl = SSL_new(context.pointer) else {
            throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
        }
        self.ssl = ssl
        self.socket = socket
        self.context = context
        self.host = host
        guard SSL_set_fd(ssl, socket.fd) == 1 else {
            throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
        }
        let isAddress = Self.isIPAddress(host)
        if !isAddress {
            // RFC 6066 §3: server_name carries a DNS name; literal IPv4 and IPv6 addresses are not permitted.
            guard stovepipe_SSL_set_tlsext_host_name(ssl, host) == 1 else {
                throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain())
            }
        }
        if context.verification != .disabled {
            // RFC 6125 §6: the certificate must name the host the URL names; an IP address is matched
            // against iPAddress subjectAltNames, a DNS name against dNSName ones.
            let named =
                isAddress ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) : SSL_set1_host(ssl, host)
            guard named == 1 else { throw .tlsSetupFailed(reason: HealthcheckOpenSSLErrors.drain()) }
        }
        try handshake()
    }

    deinit { SSL_free(ssl) }

    /// Sends close_notify (RFC 8446 §6.1) without waiting for the server's.
    func close() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    func write(_ bytes: [UInt8]) throws(HealthcheckFailure) {
        guard !bytes.isEmpty else { return }
        ERR_clear_error()
        // Without SSL_MODE_ENABLE_PARTIAL_WRITE a blocking SSL_write returns only once all bytes are sent.
        let count = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32(clamping: $0.count)) }
        if count > 0 { return }
        throw failure(SSL_get_error(ssl, count), errno: errno, sending: true)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(HealthcheckFailure) -> Int {
        ERR_clear_error()
        let count = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if count > 0 { return Int(count) }
        let number = errno
        let code = SSL_get_error(ssl, count)
        if code == SSL_ERROR_ZERO_RETURN || (code == SSL_ERROR_SYSCALL && number == 0) {
            ERR_clear_error()
            return 0
        }
        throw failure(code, errno: number, sending: false)
    }

    private func handshake() throws(HealthcheckFailure) {
        ERR_clear_error()
        let result = SSL_connect(ssl)
        if result == 1 { return }
        let number = errno
        let code = SSL_get_error(ssl, result)
        let verdict = SSL_get_verify_result(ssl)
        if context.verification != .disabled && verdict != Int(X509_V_OK) {
            ERR_clear_error()
            let reason = X509_verify_cert_error_string(verdict).map { String(cString: $0) } ?? "error \(verdict)"
            if verdict == Int(X509_V_ERR_HOSTNAME_MISMATCH) || verdict == Int(X509_V_ERR_IP_ADDRESS_MISMATCH) {
                throw .certificateNameMismatch(host: host, reason: reason)
            }
            throw .certificateRejected(host: host, reason: reason)
        }
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            // The socket BIO turns an expired SO_RCVTIMEO or SO_SNDTIMEO (EAGAIN) into a retry.
            ERR_clear_error()
            throw .timedOut(endpoint: socket.endpoint, seconds: socket.timeout)
        case SSL_ERROR_SYSCALL where number == EAGAIN || number == EWOULDBLOCK:
            ERR_clear_error()
            throw .timedOut(endpoint: socket.endpoint, seconds: socket.timeout)
        case SSL_ERROR_SYSCALL where number != 0:
            ERR_clear_error()
            throw .handshakeFailed(endpoint: socket.endpoint, reason: String(cString: strerror(number)))
        case SSL_ERROR_SYSCALL:
            let reason = HealthcheckOpenSSLErrors.drain()
            throw .handshakeFailed(
                endpoint: socket.endpoint, reason: reason.isEmpty ? "the server closed the connection" : reason)
        default:
            let reason = HealthcheckOpenSSLErrors.drain()
            throw .handshakeFailed(endpoint: socket.endpoint, reason: reason.isEmpty ? "TLS error \(code)" : reason)
        }
    }

    /// What a failed SSL_read or SSL_write means.
    private func failure(_ code: Int32, errno number: Int32, sending: Bool) -> HealthcheckFailure {
        switch code {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            ERR_clear_error()
            return .timedOut(endpoint: socket.endpoint, seconds: socket.timeout)
        case SSL_ERROR_SYSCALL where number != 0:
            ERR_clear_error()
            return socket.failure(number, sending: sending)
        default:
            let drained = HealthcheckOpenSSLErrors.drain()
            let reason = drained.isEmpty ? "the connection was closed" : drained
            return sending
                ? .sendFailed(endpoint: socket.endpoint, reason: reason)
                : .receiveFailed(endpoint: socket.endpoint, reason: reason)
        }
    }

    private static func isIPAddress(_ host: String) -> Bool {
        var scratch = in6_addr()
        return inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1
    }
}

/// The calling thread's OpenSSL error queue, for one-line messages.
enum HealthcheckOpenSSLErrors {
    /// Empties the queue and returns the reason of its oldest entry, the root cause; empty when there was none.
    static func drain() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "" }
        return stovepipe_ERR_reason(code).map { String(cString: $0) } ?? "error \(code)"
    }
}
