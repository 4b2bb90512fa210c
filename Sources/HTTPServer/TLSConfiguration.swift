/// Serve HTTPS: the certificate chain and private key files, and what the handshake must meet.
public struct TLSConfiguration: Sendable, Equatable {
    /// A PEM file: the server certificate first, then any intermediates (leaf to root).
    public var certificateChainPath: String
    /// A PEM file with the private key of the certificate; unencrypted.
    public var privateKeyPath: String
    /// A client must finish the handshake this long after it connected, else it is disconnected.
    public var handshakeTimeout: Duration
    /// The oldest protocol version a client may negotiate.
    public var minimumVersion: TLSVersion

    /// A configuration with a 10 s handshake timeout and TLS 1.2 or later.
    public init(
        certificateChainPath: String, privateKeyPath: String, handshakeTimeout: Duration = .seconds(10),
        minimumVersion: TLSVersion = .tls12
    ) {
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.handshakeTimeout = handshakeTimeout
        self.minimumVersion = minimumVersion
    }
}

/// When the certificate in use is valid, in seconds since the Unix epoch.
public struct TLSCertificateValidity: Sendable, Equatable {
    /// The start of the validity period (notBefore).
    public var notBefore: Int64
    /// The end of the validity period (notAfter).
    public var notAfter: Int64

    /// A validity period from its two ends.
    public init(notBefore: Int64, notAfter: Int64) {
        self.notBefore = notBefore
        self.notAfter = notAfter
    }
}

/// A TLS protocol version the server may require as its minimum.
public enum TLSVersion: Sendable, Equatable, CaseIterable {
    /// TLS 1.2 (RFC 5246).
    case tls12
    /// TLS 1.3 (RFC 8446).
    case tls13
}
