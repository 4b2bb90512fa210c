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
/// of stream (HTTP/1.1 frames its own messages, so truncation is detected there).
static inline uint64_t stovepipe_SSL_CTX_set_server_options(SSL_CTX *context) {
    return SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION
                                            | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
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
