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
    jw_key(j, "uuid");
    jw_string(j, text);
    jw_key(j, "ctime");
    if (gmtime_r(&t, &tm) && strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm))
        jw_string(j, text);
    else
        jw_string(j, ""); /* a year that does not fit struct tm */
    jw_key(j, "ctime_epoch");
    jw_int(j, vma_reader_ctime(r));
    jw_key(j, "compression");
    jw_string(j, vma_reader_compression(r));
    jw_key(j, "configs");
    jw_begin_array(j);
    for (i = 0; i < vma_reader_config_count(r); i++) {
        const char *name;
        size_t len;

        if (vma_reader_config(r, i, &name, NULL, &len) != VMA_OK)
            continue;
        jw_begin_object(j);
        jw_key(j, "name");
        jw_string(j, name);
        jw_key(j, "size");
        jw_uint(j, len);
        jw_end_object(j);
    }
    jw_end_array(j);
}

void json_device_fields(struct json *j, const vma_reader *r, unsigned id)
{
    jw_key(j, "id");
    jw_uint(j, id);
    jw_key(j, "name");
    jw_string(j, vma_reader_device_name(r, id));
    jw_key(j, "size");
    jw_uint(j, vma_reader_device_size(r, id));
    jw_key(j, "vmstate");
    jw_bool(j, vma_reader_device_is_vmstate(r, id));
}

void json_device_stats(struct json *j, const vma_reader *r, unsigned id)
{
    uint64_t stored, zero, all;

    vma_reader_device_counters(r, id, &stored, &zero);
    all = stored + zero;
    jw_key(j, "bytes_stored");
    jw_uint(j, stored);
    jw_key(j, "zero_bytes");
    jw_uint(j, zero);
    jw_key(j, "sparse_ratio");
    jw_double(j, all ? (double)zero / (double)all : 0.0);
}

void json_read_totals(struct json *j, const vma_reader *r)
{
    uint64_t clusters, zero_clusters, zero_blocks;

    vma_reader_counters(r, &clusters, &zero_clusters, &zero_blocks);
    jw_key(j, "clusters_read");
    jw_uint(j, clusters);
    jw_key(j, "zero_cluster_bytes");
    jw_uint(j, zero_clusters);
    jw_key(j, "zero_block_bytes");
    jw_uint(j, zero_blocks);
    jw_key(j, "verdict");
    jw_string(j, "ok");
}

int print_list_json(const vma_reader *r)
{
    struct json j;
    unsigned id;

    jw_init(&j, stdout);
    jw_begin_object(&j);
    json_header(&j, r);
    jw_key(&j, "devices");
    jw_begin_array(&j);
    for (id = vma_reader_next_device(r, 0); id; id = vma_reader_next_device(r, id)) {
        jw_begin_object(&j);
        json_device_fields(&j, r, id);
        jw_end_object(&j);
    }
    jw_end_array(&j);
    jw_end_object(&j);
    return cli_json_printed();
}
