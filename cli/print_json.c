/*
 * The archive header as JSON (see print_json.h).
 * SPDX-License-Identifier: MIT
 */
#include <time.h>
#include <uuid/uuid.h>

#include "cli.h"
#include "json.h"
#include "print_json.h"

void json_header(struct json *j, const vma_reader *r)
{
    unsigned char uuid[16];
    char text[64];
    time_t t = (time_t)vma_reader_ctime(r);
    struct tm tm;
    unsigned i;

    vma_reader_uuid(r, uuid);
    uuid_unparse_lower(uuid, text);
    json_key(j, "uuid");
    json_string(j, text);
    json_key(j, "ctime");
    if (gmtime_r(&t, &tm) && strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm))
        json_string(j, text);
    else
        json_string(j, ""); /* a year that does not fit struct tm */
    json_key(j, "ctime_epoch");
    json_int(j, vma_reader_ctime(r));
    json_key(j, "compression");
    json_string(j, vma_reader_compression(r));
    json_key(j, "configs");
    json_begin_array(j);
    for (i = 0; i < vma_reader_config_count(r); i++) {
        const char *name;
        size_t len;

        if (vma_reader_config(r, i, &name, NULL, &len) != VMA_OK)
            continue;
        json_begin_object(j);
        json_key(j, "name");
        json_string(j, name);
        json_key(j, "size");
        json_uint(j, len);
        json_end_object(j);
    }
    json_end_array(j);
}

void json_device_fields(struct json *j, const vma_reader *r, unsigned id)
{
    json_key(j, "id");
    json_uint(j, id);
    json_key(j, "name");
    json_string(j, vma_reader_device_name(r, id));
    json_key(j, "size");
    json_uint(j, vma_reader_device_size(r, id));
    json_key(j, "vmstate");
    json_bool(j, vma_reader_device_is_vmstate(r, id));
}

void json_device_stats(struct json *j, const vma_reader *r, unsigned id)
{
    uint64_t stored, zero, all;

    vma_reader_device_counters(r, id, &stored, &zero);
    all = stored + zero;
    json_key(j, "bytes_stored");
    json_uint(j, stored);
    json_key(j, "zero_bytes");
    json_uint(j, zero);
    json_key(j, "sparse_ratio");
    json_double(j, all ? (double)zero / (double)all : 0.0);
}

void json_read_totals(struct json *j, const vma_reader *r)
{
    uint64_t clusters, zero_clusters, zero_blocks;

    vma_reader_counters(r, &clusters, &zero_clusters, &zero_blocks);
    json_key(j, "clusters_read");
    json_uint(j, clusters);
    json_key(j, "zero_cluster_bytes");
    json_uint(j, zero_clusters);
    json_key(j, "zero_block_bytes");
    json_uint(j, zero_blocks);
    json_key(j, "verdict");
    json_string(j, "ok");
}

int print_list_json(const vma_reader *r)
{
    struct json j;
    unsigned id;

    json_init(&j, stdout);
    json_begin_object(&j);
    json_header(&j, r);
    json_key(&j, "devices");
    json_begin_array(&j);
    for (id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id)) {
        json_begin_object(&j);
        json_device_fields(&j, r, id);
        json_end_object(&j);
    }
    json_end_array(&j);
    json_end_object(&j);
    return cli_json_printed();
}
