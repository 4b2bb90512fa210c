import CEpoll
import Glibc

/// The outcome of one read or write on a transport.
enum TransportResult: Equatable {
    /// This many bytes moved (at least one).
    case transferred(Int)
    /// Nothing can move until the descriptor is ready again.
    case wouldBlock
    /// The peer closed its sending side (reads only).
    case endOfStream
    /// The connection is broken; the errno says why.
    case failed(Int32)
    /// The TLS handshake failed: the client spoke something else or nothing we accept (reads only).
    case handshakeFailed
}

/// Byte I/O over one accepted connection: plain TCP or TLS.
///
/// Calls are non-blocking and made under the connection's lock. A TLS transport may answer
/// `.wouldBlock` to a read while it needs to write (and the reverse): the event loop registers both
/// directions edge-triggered and retries a read that waits for writability on a writable event,
/// and a write that waits for readability on a readable one.
protocol ConnectionTransport: Sendable {
    /// False while a TLS handshake is in progress; always true for plain TCP.
    var isEstablished: Bool { get }
    /// The last read returned `.wouldBlock` because the transport must send first.
    var readWaitsForWritable: Bool { get }
    /// The last write returned `.wouldBlock` because the transport must receive first.
    var writeWaitsForReadable: Bool { get }
    /// Input is buffered inside the transport, so a short read does not mean the socket is drained.
    var hasBufferedInput: Bool { get }
    /// The last `shutdownWrite` could not send everything (a TLS close_notify) and is retried when writable.
    var shutdownWaitsForWritable: Bool { get }
    /// Reads into `buffer`.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> TransportResult
    /// Writes a prefix of `bytes`.
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> TransportResult
    /// Stops sending (a TLS layer sends close_notify here) but keeps reading.
    mutating func shutdownWrite()
    /// Releases the descriptor; the transport is unusable after.
    mutating func close()
}

/// Plain TCP on a non-blocking socket.
struct SocketTransport: ConnectionTransport {
    private(set) var fd: Int32

    init(fd: Int32) { self.fd = fd }

    var isEstablished: Bool { true }
    var readWaitsForWritable: Bool { false }
    var writeWaitsForReadable: Bool { false }
    var hasBufferedInput: Bool { false }
    var shutdownWaitsForWritable: Bool { false }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> TransportResult {
        guard fd >= 0 else { return .failed(EBADF) }
        while true {
            let count = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if count > 0 { return .transferred(count) }
            if count == 0 { return .endOfStream }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case let code: return .failed(code)
            }
        }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> TransportResult {
        guard fd >= 0 else { return .failed(EBADF) }
        while true {
            // MSG_NOSIGNAL: a peer that went away yields EPIPE instead of a process-killing SIGPIPE.
            let count = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if count >= 0 { return .transferred(count) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case let code: return .failed(code)
            }
        }
    }

    mutating func shutdownWrite() {
        guard fd >= 0 else { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    mutating func close() {
        guard fd >= 0 else { return }
        _ = Glibc.close(fd)
        fd = -1
    }
}
