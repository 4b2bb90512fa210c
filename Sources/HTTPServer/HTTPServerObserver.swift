/// Receives the server's events for metrics; called on event-loop and worker threads, so keep it cheap.
public protocol HTTPServerObserver: Sendable {
    /// A connection was accepted and is being served.
    func connectionOpened(peer: String)
    /// A connection that `connectionOpened` reported was closed.
    func connectionClosed(peer: String)
    /// A connection was accepted beyond `maxConnections`, answered 503 and closed.
    func connectionRefused(peer: String)
    /// accept(2) failed with `errno`; out of descriptors the connection still gets a 503, else accepting pauses.
    func acceptFailed(errno: Int32)
    /// A client broke the protocol; the server answered `error.status` where it could (not inside a
    /// TLS handshake) and closed the connection.
    func protocolError(_ error: HTTPProtocolError)
    /// A request was answered 503 unhandled: the worker queue was full (and the connection closed) or it waited past `queueTimeout`.
    func requestShed()
    /// A response to a request was handed to the connection.
    /// - Parameters:
    ///   - method: The request method.
    ///   - status: The response status.
    ///   - duration: From the request being complete to its response being queued for sending.
    ///   - requestBytes: Bytes the request took on the wire.
    ///   - responseBytes: Bytes of the serialized response.
    func requestCompleted(method: String, status: Int, duration: Duration, requestBytes: Int, responseBytes: Int)
}

extension HTTPServerObserver {
    /// Does nothing.
    public func connectionOpened(peer: String) {}
    /// Does nothing.
    public func connectionClosed(peer: String) {}
    /// Does nothing.
    public func connectionRefused(peer: String) {}
    /// Does nothing.
    public func acceptFailed(errno: Int32) {}
    /// Does nothing.
    public func protocolError(_ error: HTTPProtocolError) {}
    /// Does nothing.
    public func requestShed() {}
    /// Does nothing.
    public func requestCompleted(method: String, status: Int, duration: Duration, requestBytes: Int, responseBytes: Int)
    {}
}
