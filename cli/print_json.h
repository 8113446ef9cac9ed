/*
 * The archive header in JSON: what list --output-format=json prints and
 * what verify, extract and checksum start their documents with, and
 * the statistics verify and extract add.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_PRINT_JSON_H
#define VMA_CLI_PRINT_JSON_H

#include "json.h"
#include "vma.h"

/* Keys uuid, ctime (ISO 8601, UTC), ctime_epoch, compression and configs
 * ([{name, size}]) into the open object. */
void json_header(struct json *j, const vma_reader *r);

/* Keys id, name, size and vmstate of a device into the open object. */
void json_device_fields(struct json *j, const vma_reader *r, unsigned id);

/* After a whole read or restore: keys bytes_stored, zero_bytes and
 * sparse_ratio of a device into the open object. */
void json_device_stats(struct json *j, const vma_reader *r, unsigned id);

/* After a whole read or restore: keys clusters_read, zero_cluster_bytes,
 * zero_block_bytes and "verdict": "ok" into the open object. */
void json_read_totals(struct json *j, const vma_reader *r);

/* list --output-format=json: the header and the devices. */
int print_list_json(const vma_reader *r);

#endif
