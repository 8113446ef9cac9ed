/*
 * SHA-256 for vma checksum, with OpenSSL's libcrypto (SHA-NI / AVX2:
 * seven times libmd's C code), loaded on first use with dlopen(3): linked,
 * its loading cost every run of vma 2.5 ms, an eighth of a 270 MB verify,
 * though only checksum needs it. The calls keep libcrypto's names and
 * prototypes (__typeof__), through a table.
 * SPDX-License-Identifier: MIT
 */
#ifndef CLI_SHA256_H
#define CLI_SHA256_H

#include <openssl/evp.h>

struct cli_libcrypto {
    __typeof__(EVP_MD_CTX_new) *md_ctx_new;
    __typeof__(EVP_MD_CTX_free) *md_ctx_free;
    __typeof__(EVP_sha256) *sha256;
    __typeof__(EVP_DigestInit_ex) *digest_init;
    __typeof__(EVP_DigestUpdate) *digest_update;
    __typeof__(EVP_DigestFinal_ex) *digest_final;
};

/* Filled by cli_libcrypto_load(). */
extern struct cli_libcrypto cli_crypto;

/* Load libcrypto once (not thread-safe: call it before starting threads).
 * Returns 0, or -1 after printing why. */
int cli_libcrypto_load(void);

#endif
