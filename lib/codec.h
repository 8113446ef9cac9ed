/*
 * What the compressed-stream code shares, defined once: codec ids, magic
 * numbers, lzop's header flags and limits, compression level ranges.
 * input.c reads the streams, output.c writes them, lzo_blocks.c reads
 * .vma.lzo in place, writer.c parses the codec spec. Internal to libvma.
 * SPDX-License-Identifier: MIT
 */
#ifndef LIBVMA_CODEC_H
#define LIBVMA_CODEC_H

enum vmai_codec { VMAI_CODEC_NONE, VMAI_CODEC_ZSTD, VMAI_CODEC_GZIP, VMAI_CODEC_LZO };

/* The first bytes of each stream (static: a file that does not use one
 * gets no warning for a header's constant). */
static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
/* A zstd skippable frame: 0x184D2A50..0x184D2A5F, little-endian. */
static const unsigned char zstd_skippable[3] = {0x2a, 0x4d, 0x18};
static const unsigned char gzip_magic[2] = {0x1f, 0x8b};
static const unsigned char lzop_magic[9] = {0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a};

/* lzop header flags we must honour. */
#define LZOP_ADLER32_D 0x0001u
#define LZOP_ADLER32_C 0x0002u
#define LZOP_EXTRA_FIELD 0x0040u
#define LZOP_CRC32_D 0x0100u
#define LZOP_CRC32_C 0x0200u
#define LZOP_MULTIPART 0x0400u /* no meaning for reading: a header that sets it still reads */
#define LZOP_FILTER 0x0800u
#define LZOP_H_CRC32 0x1000u
#define LZOP_RESERVED 0x000fc000u /* lzop refuses these: "unknown flags" */
#define LZOP_VERSION_MAX 0x1040u  /* lzop 1.04, the last release (and what we write) */
/* From lzop 0.94 on, the header holds the version needed to extract and
 * the level, and the flags and name fields move by them. */
#define LZOP_VERSION_NEW_HEADER 0x0940u
#define LZO_MAX_BLOCK (64u << 20) /* lzop's own limit on a block */

/* Compression levels: default and highest (the lowest is 1). */
#define VMAI_ZSTD_LEVEL_DEFAULT 3
#define VMAI_ZSTD_LEVEL_MAX 22 /* ZSTD_maxCLevel() of libzstd 1.5 */
#define VMAI_GZIP_LEVEL_DEFAULT 6
#define VMAI_GZIP_LEVEL_MAX 9

#endif
