/*
 * The in-memory index of a random-access image (see ra_index.h).
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "ra_index.h"

void vmai_ra_clear(struct vmai_ra_index *ix)
{
    for (unsigned i = 0; i < VMA_DEV_SLOTS; i++) {
        free(ix->dev[i].e);
        free((void *)ix->dev[i].checked);
        memset(&ix->dev[i], 0, sizeof(ix->dev[i]));
    }
    free(ix->extents);
    ix->extents = NULL;
    ix->extent_count = ix->extent_cap = 0;
}
