/*
 * libcrypto loaded on first use (see sha256.h for why).
 * SPDX-License-Identifier: MIT
 */
#include "sha256.h"

#include <dlfcn.h>
#include <string.h>

#include "cli.h"

/* The soname of OpenSSL 3, whose headers this is built with. */
#define LIBCRYPTO_SONAME "libcrypto.so.3"

struct cli_libcrypto cli_crypto;

int cli_libcrypto_load(void)
{
    static int loaded;
    if (loaded)
        return 0;
    void *h = dlopen(LIBCRYPTO_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        return cli_fail("cannot load %s for SHA-256 (install libssl3): %s", LIBCRYPTO_SONAME,
                        why != NULL ? why : "not found");
    }
    struct {
        const char *name;
        void *slot;
    } syms[] = {
        {"EVP_MD_CTX_new", &cli_crypto.md_ctx_new},
        {"EVP_MD_CTX_free", &cli_crypto.md_ctx_free},
        {"EVP_sha256", &cli_crypto.sha256},
        {"EVP_DigestInit_ex", &cli_crypto.digest_init},
        {"EVP_DigestUpdate", &cli_crypto.digest_update},
        {"EVP_DigestFinal_ex", &cli_crypto.digest_final},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        void *f = dlsym(h, syms[i].name);
        if (f == NULL) {
            dlclose(h);
            return cli_fail("%s has no %s", LIBCRYPTO_SONAME, syms[i].name);
        }
        /* POSIX: a function pointer round-trips through dlsym's void *. */
        memcpy(syms[i].slot, &f, sizeof(f));
    }
    loaded = 1;
    return 0;
}
