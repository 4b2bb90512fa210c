import COpenSSL
import Glibc
import Synchronization

/// One configured SSL_CTX: certificate, key and protocol settings for the connections made from it.
// @unchecked Sendable: OpenSSL allows an SSL_CTX to be shared by threads once it is configured; it
// is configured entirely in `load` before any other thread sees it, and only SSL_new reads it after.
final class SSLContext: @unchecked Sendable {
    let pointer: OpaquePointer

    private init(pointer: OpaquePointer) { self.pointer = pointer }

    deinit { SSL_CTX_free(pointer) }

    /// Reads the certificate chain and key and checks that they belong together.
    static func load(_ configuration: TLSConfiguration) throws(HTTPServerError) -> SSLContext {
        ERR_clear_error()
        guard let pointer = SSL_CTX_new(TLS_server_method()) else {
            throw .tlsSetupFailed(reason: OpenSSLErrors.drain())
        }
        let context = SSLContext(pointer: pointer)
        let minimum = configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard stovepipe_SSL_CTX_set_min_proto_version(pointer, minimum) == 1 else {
            throw .tlsSetupFailed(reason: OpenSSLErrors.drain())
        }
        _ = stovepipe_SSL_CTX_set_server_options(pointer)
        // TLS 1.2 suites (TLS 1.3's are set apart and its defaults are all AEAD with forward secrecy): Mozilla's
        // "intermediate" ECDHE with AES-GCM or ChaCha20-Poly1305 only, so no static-RSA key exchange (no forward
        // secrecy) and no CBC (Lucky13 and other padding oracles).
        guard SSL_CTX_set_cipher_list(pointer, SSLContext.tls12CipherSuites) == 1 else {
            throw .tlsSetupFailed(reason: OpenSSLErrors.drain())
        }
        _ = stovepipe_SSL_CTX_set_nonblocking_server_modes(pointer)
        stovepipe_SSL_CTX_select_http11(pointer)
        // Without a callback OpenSSL asks for an encrypted key's passphrase on the terminal, which
        // would block start-up (or a reload) forever; no passphrase makes such a key fail to load.
        // OpenSSL calls it only when a PEM block is encrypted (pem_password_cb(3)), so it also marks
        // the key as encrypted: OpenSSL's own reason ("bad decrypt") does not say so.
        SSL_CTX_set_default_passwd_cb(pointer) { _, _, _, flag in
            flag?.assumingMemoryBound(to: Int32.self).pointee = 1
            return 0
        }
        guard SSL_CTX_use_certificate_chain_file(pointer, configuration.certificateChainPath) == 1 else {
            throw .tlsCertificateUnusable(path: configuration.certificateChainPath, reason: OpenSSLErrors.drain())
        }
        var askedForPassphrase: Int32 = 0
        let loaded = withUnsafeMutablePointer(to: &askedForPassphrase) { flag in
            SSL_CTX_set_default_passwd_cb_userdata(pointer, flag)
            defer { SSL_CTX_set_default_passwd_cb_userdata(pointer, nil) }
            return SSL_CTX_use_PrivateKey_file(pointer, configuration.privateKeyPath, SSL_FILETYPE_PEM)
        }
        guard loaded == 1 else {
            if askedForPassphrase != 0 {
                ERR_clear_error()
                throw .tlsPrivateKeyEncrypted(path: configuration.privateKeyPath)
            }
            // OpenSSL checks the key against the certificate while loading it.
            let (reason, codes) = OpenSSLErrors.drainWithCodes()
            if codes.contains(where: { stovepipe_ERR_is_key_mismatch($0) != 0 }) {
                throw .tlsKeyDoesNotMatchCertificate
            }
            throw .tlsPrivateKeyUnusable(path: configuration.privateKeyPath, reason: reason)
        }
        guard SSL_CTX_check_private_key(pointer) == 1 else {
            ERR_clear_error()
            throw .tlsKeyDoesNotMatchCertificate
        }
        return context
    }

    /// The TLS 1.2 cipher suites offered, in the server's order of preference.
    static let tls12CipherSuites =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    /// The validity period of the leaf certificate; nil if OpenSSL cannot decode it.
    var validity: TLSCertificateValidity? {
        // OpenSSL serves an expired certificate without complaint, and clients that verify it refuse the
        // handshake; the validity lets the operator be told at start-up and on reload.
        guard let certificate = SSL_CTX_get0_certificate(pointer),
            let notBefore = Self.epochSeconds(X509_get0_notBefore(certificate)),
            let notAfter = Self.epochSeconds(X509_get0_notAfter(certificate))
        else {
            ERR_clear_error()
            return nil
        }
        return TLSCertificateValidity(notBefore: notBefore, notAfter: notAfter)
    }

    private static func epochSeconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Int64(timegm(&parts))
    }

    /// The oldest protocol version this context accepts, as OpenSSL numbers it (0x0303 is TLS 1.2).
    var minimumProtocolVersion: Int32 { stovepipe_SSL_CTX_get_min_proto_version(pointer) }
}

/// The TLS context new connections are made from; `reload` swaps it without touching open ones.
final class TLSContextStore: Sendable {
    let configuration: TLSConfiguration
    private let current = Mutex<SSLContext?>(nil)

    init(configuration: TLSConfiguration) {
        self.configuration = configuration
    }

    /// Loads the files again and uses the result for connections accepted from now on.
    func reload() throws(HTTPServerError) {
        let fresh = try SSLContext.load(configuration)
        // The old context is released after the swap. That only drops our reference: SSL_new took
        // one of its own for every connection made from it (SSL_CTX is reference-counted), so those
        // connections keep their certificate until they close.
        current.withLock { $0 = fresh }
    }

    /// The context in use; nil before the first load.
    var context: SSLContext? { current.withLock { $0 } }

    /// A server-side TLS transport over the accepted socket `fd`; nil if OpenSSL cannot make one.
    func makeTransport(fd: Int32) -> TLSTransport? {
        guard let context else { return nil }
        ERR_clear_error()
        // Swift may release `context` right after reading its pointer; a reload swapping it out meanwhile would
        // then free the SSL_CTX before SSL_new takes its own reference.
        let made = withExtendedLifetime(context) { SSL_new(context.pointer) }
        guard let ssl = made else {
            ERR_clear_error()
            return nil
        }
        guard SSL_set_fd(ssl, fd) == 1 else {
            ERR_clear_error()
            SSL_free(ssl)
            return nil
        }
        SSL_set_accept_state(ssl)
        return TLSTransport(fd: fd, ssl: ssl)
    }
}

/// OpenSSL's per-thread error queue.
enum OpenSSLErrors {
    /// Empties the calling thread's queue and returns its reasons, oldest first.
    static func drain() -> String { drainWithCodes().reasons }

    /// Empties the calling thread's queue and returns its reasons and its packed error codes.
    static func drainWithCodes() -> (reasons: String, codes: [UInt]) {
        var reasons: [String] = []
        var codes: [UInt] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            codes.append(code)
            let reason = stovepipe_ERR_reason(code).map { String(cString: $0) } ?? "error \(code)"
            if !reasons.contains(reason) { reasons.append(reason) }
        }
        return (reasons.isEmpty ? "unknown OpenSSL error" : reasons.joined(separator: ": "), codes)
    }
}
