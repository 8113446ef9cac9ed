/*
 * libnbd loaded on first use (see libnbd_load.h for why).
 * SPDX-License-Identifier: MIT
 */
#define VMAI_LIBNBD_LOADER
#include "libnbd_load.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "io.h"

/* The soname of the libnbd the library was built against (1.x). */
#define LIBNBD_SONAME "libnbd.so.0"

struct vmai_libnbd vmai_libnbd;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[VMAI_ERRLEN]; /* empty when loaded */

static void load(void)
{
    void *h = dlopen(LIBNBD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        snprintf(load_error, sizeof(load_error),
                 "cannot load %s, needed for NBD and QEMU image formats (install libnbd0): %s",
                 LIBNBD_SONAME, why != NULL ? why : "not found");
        return;
    }
    struct vmai_libnbd t;
    /* POSIX guarantees a function pointer round-trips through dlsym's
     * void *; memcpy says so without a cast the compiler warns about. */
#define VMAI_LIBNBD_RESOLVE(name)                                                                  \
    {                                                                                              \
        void *sym = dlsym(h, "nbd_" #name);                                                        \
        if (sym == NULL) {                                                                         \
            snprintf(load_error, sizeof(load_error),                                               \
                     "%s has no nbd_" #name " (libnbd too old?)", LIBNBD_SONAME);                  \
            dlclose(h);                                                                            \
            return;                                                                                \
        }                                                                                          \
        memcpy(&t.name, &sym, sizeof(sym));                                                        \
    }
    VMAI_LIBNBD_FUNCTIONS(VMAI_LIBNBD_RESOLVE)
#undef VMAI_LIBNBD_RESOLVE
    vmai_libnbd = t; /* never unloaded: handles may outlive any caller */
}

int vmai_libnbd_load(char *err, size_t errlen)
{
    pthread_once(&load_once, load);
    if (load_error[0] == '\0')
        return 0;
    snprintf(err, errlen, "%s", load_error);
    return -1;
}
