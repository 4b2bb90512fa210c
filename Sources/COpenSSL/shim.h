#ifndef STOVEPIPE_COPENSSL_SHIM_H
#define STOVEPIPE_COPENSSL_SHIM_H
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <stdint.h>
#include <string.h>

/// SSL_CTX_set_min_proto_version is a macro over SSL_CTX_ctrl, which Swift cannot import.
static inline int stovepipe_SSL_CTX_set_min_proto_version(SSL_CTX *context, int version) {
    return (int)SSL_CTX_set_min_proto_version(context, version);
}

/// SSL_CTX_get_min_proto_version is a macro over SSL_CTX_ctrl, which Swift cannot import.
static inline int stovepipe_SSL_CTX_get_min_proto_version(SSL_CTX *context) {
    return (int)SSL_CTX_get_min_proto_version(context);
}

/// SSL_CTX_set_mode is a macro over SSL_CTX_ctrl, which Swift cannot import. The modes a
/// non-blocking server needs: SSL_write returns after each record it sends (ENABLE_PARTIAL_WRITE),
/// a retried SSL_write may pass the same bytes at another address (ACCEPT_MOVING_WRITE_BUFFER), and
/// an idle connection gives its read and write buffers back (RELEASE_BUFFERS).
static inline long stovepipe_SSL_CTX_set_nonblocking_server_modes(SSL_CTX *context) {
    return SSL_CTX_set_mode(context, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                                         | SSL_MODE_RELEASE_BUFFERS);
}

/// The SSL_OP_* constants are built with the function-like macro SSL_OP_BIT, which Swift cannot
/// import. No renegotiation (a client-triggered CPU cost and a source of SSL_write wanting to
/// read), no TLS compression (CRIME), and a peer that closes TCP without close_notify reads as end
/// of stream (HTTP/1.1 frames its own messages, so truncation is detected there). No stateless session
/// tickets: their key is made with the SSL_CTX and never rotated, so one leak of it would decrypt every
/// TLS 1.2 session resumed by ticket since start-up or the last reload (no forward secrecy). Resumption
/// stays, from the server's session cache: by session id in TLS 1.2, by stateful tickets in TLS 1.3.
static inline uint64_t stovepipe_SSL_CTX_set_server_options(SSL_CTX *context) {
    return SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION
                                            | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE
                                            | SSL_OP_NO_TICKET);
}

/// The ALPN callback of a server that speaks only HTTP/1.1: selects "http/1.1" when the client offers
/// it. A client that offers ALPN without it cannot talk to this server; RFC 7301 §3.2 says a server
/// that supports none of the offered protocols SHALL answer no_application_protocol, which OpenSSL
/// sends for SSL_TLSEXT_ERR_ALERT_FATAL, rather than go on and receive a protocol it cannot parse
/// (an "h2"-only client) or serve a cross-protocol request (ALPACA).
static int stovepipe_select_http11(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                   const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = {'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned int index = 0;
    // The offer is a list of length-prefixed names (RFC 7301 §3.1); OpenSSL has checked its framing.
    while (index < inlen) {
        unsigned int length = in[index];
        if (length > inlen - index - 1) break;
        if (length == sizeof http11 && memcmp(in + index + 1, http11, sizeof http11) == 0) {
            *out = in + index + 1;
            *outlen = (unsigned char)length;
            return SSL_TLSEXT_ERR_OK;
        }
        index += 1 + length;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/// Makes the server select "http/1.1" by ALPN and refuse clients that offer only other protocols.
static inline void stovepipe_SSL_CTX_select_http11(SSL_CTX *context) {
    SSL_CTX_set_alpn_select_cb(context, stovepipe_select_http11, NULL);
}

/// ERR_GET_LIB and ERR_GET_REASON are macros before OpenSSL 3. True when the handshake failed
/// because the first bytes were a plain-text HTTP request (OpenSSL checks for "GET ", "POST " etc.).
static inline int stovepipe_ERR_is_plain_http_request(unsigned long code) {
    return ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST;
}

/// ERR_SYSTEM_ERROR and ERR_SYSTEM_MASK are macros. The errno packed in a system error code (one
/// ERR_reason_error_string has no text for), else 0.
static inline int stovepipe_ERR_system_errno(unsigned long code) {
    return ERR_SYSTEM_ERROR(code) ? (int)(code & ERR_SYSTEM_MASK) : 0;
}

/// The reason of one packed error code: strerror(3) for a system error (which ERR_reason_error_string
/// has no text for), else OpenSSL's reason string; NULL when neither has one.
static inline const char *stovepipe_ERR_reason(unsigned long code) {
    int number = stovepipe_ERR_system_errno(code);
    return number != 0 ? strerror(number) : ERR_reason_error_string(code);
}

/// ERR_GET_LIB and ERR_GET_REASON are macros before OpenSSL 3. True when loading a private key
/// failed because it does not belong to the certificate already loaded.
static inline int stovepipe_ERR_is_key_mismatch(unsigned long code) {
    return ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH;
}

/// SSL_set_tlsext_host_name is a macro over SSL_ctrl, which Swift cannot import. Sets the name a
/// client sends in the server_name extension (RFC 6066 §3).
static inline int stovepipe_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

/// The SSL_OP_* constants are built with the function-like macro SSL_OP_BIT, which Swift cannot
/// import. A client without TLS compression (CRIME), for which a server closing TCP without
/// close_notify reads as end of stream (the HTTP status line it needs is framed by CRLF).
static inline uint64_t stovepipe_SSL_CTX_set_client_options(SSL_CTX *context) {
    return SSL_CTX_set_options(context, SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
}
#endif
