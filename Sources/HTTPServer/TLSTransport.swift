import CEpoll
import COpenSSL
import Glibc

/// TLS through OpenSSL over one accepted non-blocking socket; the handshake runs inside the first
/// reads, on the event loop, and never blocks it.
// @unchecked Sendable: it owns an SSL*, which OpenSSL forbids using from two threads at once. The
// transport lives in Connection.State behind the connection's Mutex, and every call into it is made
// with that lock held, so the event loop (handshake, reads, deadlines, close) and the worker that
// answers the current request (writes) take turns and never touch the SSL* at the same time.
final class TLSTransport: ConnectionTransport, @unchecked Sendable {
    private(set) var fd: Int32
    private var ssl: OpaquePointer?
    private(set) var isEstablished = false
    private(set) var readWaitsForWritable = false
    private(set) var writeWaitsForReadable = false
    private(set) var shutdownWaitsForWritable = false
    /// What ended a read that had already moved bytes; the next read reports it.
    private var deferredReadResult: TransportResult?
    /// SSL_shutdown must not be called after a fatal error (SSL_shutdown(3)).
    private var fatal = false

    init(fd: Int32, ssl: OpaquePointer) {
        self.fd = fd
        self.ssl = ssl
    }

    deinit {
        if let ssl { SSL_free(ssl) }
    }

    var hasBufferedInput: Bool {
        guard let ssl else { return false }
        return deferredReadResult != nil || SSL_pending(ssl) > 0
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> TransportResult {
        guard let ssl, let base = buffer.baseAddress, !fatal else { return .failed(EBADF) }
        if let deferred = deferredReadResult {
            deferredReadResult = nil
            return deferred
        }
        readWaitsForWritable = false
        if !isEstablished, let stopped = handshake(ssl) { return stopped }
        // SSL_read returns at most one record; edge-triggered epoll reports new bytes only after
        // the socket said EAGAIN, so keep reading until OpenSSL wants more from the socket (or the
        // buffer is full, when the caller reads again) and a short read still means drained.
        var total = 0
        while total < buffer.count {
            ERR_clear_error()
            let count = SSL_read(ssl, base + total, Int32(clamping: buffer.count - total))
            if count > 0 {
                total += Int(count)
                continue
            }
            let outcome = failure(SSL_get_error(ssl, count), reading: true)
            guard total > 0 else { return outcome }
            if outcome != .wouldBlock { deferredReadResult = outcome }
            return .transferred(total)
        }
        return .transferred(total)
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> TransportResult {
        guard let ssl, let base = bytes.baseAddress, !fatal else { return .failed(EBADF) }
        writeWaitsForReadable = false
        // A retry after WANT_WRITE passes the same unsent bytes, possibly moved and with more
        // appended, which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER and a non-decreasing length allow.
        // The socket BIO writes with write(2): SIGPIPE is ignored by HTTPServer.start().
        ERR_clear_error()
        let count = SSL_write(ssl, base, Int32(clamping: bytes.count))
        if count > 0 { return .transferred(Int(count)) }
        return failure(SSL_get_error(ssl, count), reading: false)
    }

    func shutdownWrite() {
        guard fd >= 0 else { return }
        if let ssl, isEstablished, !fatal {
            // RFC 8446 §6.1: close_notify before the TCP FIN, so the client knows nothing was cut.
            ERR_clear_error()
            let result = SSL_shutdown(ssl)
            shutdownWaitsForWritable = false
            guard result >= 0 else {
                // The alert is not (fully) out; a FIN now would cut it, so leave TCP open. On WANT_WRITE the
                // call is repeated once the socket is writable (SSL_shutdown(3)), which sends the rest and the FIN.
                shutdownWaitsForWritable = SSL_get_error(ssl, result) == SSL_ERROR_WANT_WRITE
                ERR_clear_error()
                return
            }
        }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    func close() {
        if let ssl {
            SSL_free(ssl)
            self.ssl = nil
        }
        guard fd >= 0 else { return }
        _ = Glibc.close(fd)
        fd = -1
    }

    /// Drives the handshake; nil once it is complete, else what the read should report.
    private func handshake(_ ssl: OpaquePointer) -> TransportResult? {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            isEstablished = true
            return nil
        }
        let code = SSL_get_error(ssl, result)
        switch code {
        case SSL_ERROR_WANT_READ:
            return .wouldBlock
        case SSL_ERROR_WANT_WRITE:
            readWaitsForWritable = true
            return .wouldBlock
        case SSL_ERROR_SSL:
            fatal = true
            let plainHTTP = stovepipe_ERR_is_plain_http_request(ERR_peek_error()) != 0
            ERR_clear_error()
            if plainHTTP { answerPlainHTTP() }
            return .handshakeFailed
        default:
            // A peer that closes or resets before finishing (a TCP probe, say) is not a protocol
            // error: report it like any end of stream.
            return failure(code, reading: true)
        }
    }

    /// Maps SSL_get_error's verdict on a failed SSL_read or SSL_write.
    private func failure(_ code: Int32, reading: Bool) -> TransportResult {
        switch code {
        case SSL_ERROR_WANT_READ:
            if !reading { writeWaitsForReadable = true }
            return .wouldBlock
        case SSL_ERROR_WANT_WRITE:
            if reading { readWaitsForWritable = true }
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            // close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a plain TCP close.
            return reading ? .endOfStream : .failed(EPIPE)
        case SSL_ERROR_SYSCALL:
            let number = errno
            fatal = true
            ERR_clear_error()
            if number == 0 { return reading ? .endOfStream : .failed(EPIPE) }
            return .failed(number)
        default:
            fatal = true
            ERR_clear_error()
            return .failed(EPROTO)
        }
    }

    /// The nginx courtesy for `http://` sent to an HTTPS port: a plain-text 400 before closing.
    /// Best effort and never blocking; the rest of the request is read and dropped first, so the
    /// close sends a FIN rather than a reset that could destroy the answer (RFC 9112 §9.6).
    private func answerPlainHTTP() {
        var scratch = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<16 {
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count <= 0 { break }
        }
        Self.plainHTTPAnswer.withUnsafeBytes { bytes in
            _ = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
    }

    private static let plainHTTPAnswer: [UInt8] = {
        let body = "400 plain HTTP request sent to an HTTPS port\n"
        return Array(
            ("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body).utf8)
    }()
}
