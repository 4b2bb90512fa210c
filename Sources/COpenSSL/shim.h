#ifndef STOVEPIPE_COPENSSL_SHIM_H
#define STOVEPIPE_COPENSSL_SHIM_H
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#endif
