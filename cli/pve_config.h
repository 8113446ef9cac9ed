/*
 * The qemu-server.conf that vma backup stores, in the form vzdump writes
 * and qmrestore reads: the VM's current configuration (no snapshot,
 * pending or other [section], no lock:, parent: or unusedN: line, no old
 * #qmdump# line), then one "#qmdump#map:<key>:<devname>:<storeid>:<format>:"
 * line per disk backed up whose name is drive-<key> of a <key>: line.
 * SPDX-License-Identifier: MIT
 */
#ifndef VMA_CLI_PVE_CONFIG_H
#define VMA_CLI_PVE_CONFIG_H

#include <stddef.h>

/* The name under which Proxmox VE looks for the VM's configuration. */
#define PVE_CONFIG_NAME "qemu-server.conf"

/*
 * conf (len bytes) rewritten for the disks devnames[0..n): a new buffer in
 * *out (*out_len bytes), or -1 when out of memory. *unmapped counts the
 * disks for which the configuration has no line (qmrestore would refuse
 * them); the first such name goes to *first_unmapped (not copied).
 */
int pve_backup_config(const char *conf, size_t len, const char *const *devnames, size_t n,
                      char **out, size_t *out_len, size_t *unmapped,
                      const char **first_unmapped);

/* Whether the configuration's line for the disk devname (drive-<key>)
 * says backup=0 (also no, off, false): vzdump leaves such a disk out. */
int pve_config_backup_off(const char *conf, size_t len, const char *devname);

#endif
