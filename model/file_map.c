// Mapping a checkpoint in 2 MB pages.
//
// Decode reads every weight once per token. With 4 KB pages a 4 GB model has a million
// page-table entries (8 MB of them, more than the caches keep beside the weights), and
// in a virtual machine a TLB miss costs more still: on this project's VM the weights of
// Mistral-7B's shape in q4_0 streamed at 10-35 GB/s from 4 KB pages and at 60-70 GB/s
// from 2 MB pages (2 threads; docs/FORMAT.md, "Huge pages"). A file mapping gets 2 MB pages only where the page
// cache holds the file in 2 MB folios; it does when the file is read in through a
// MADV_HUGEPAGE mapping, and does not when it was written, copied or read() in small
// pieces. So: map, advise huge pages, read everything in, look at how much came in 2 MB
// pages, and if most did not, drop the file's cached pages (only clean pages that no
// other process maps) and read them again through this mapping.
#define _DEFAULT_SOURCE
#include "model/file_map.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14; older kernels answer EINVAL
#endif
#define PMD_BYTES ((uintptr_t)2 << 20)

// Local file systems whose page cache can hold a file in 2 MB folios (ext4 on recent
// kernels, as this machine's 6.18; XFS, btrfs; tmpfs keeps its pages, so re-reading costs
// nothing there). On others (a
// network file system, FUSE) a re-read that cannot help would cost a fetch of the file at
// every load, so it is not tried.
static int reread_can_help(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) return 0;
    switch ((unsigned long)fs.f_type) {
    case 0xEF53UL:     // ext2/3/4
    case 0x58465342UL: // XFS
    case 0x9123683EUL: // btrfs
    case 0x01021994UL: // tmpfs
        return 1;
    default:
        return 0;
    }
}

// a "Key:   N kB" line of /proc/meminfo in bytes; 0 when absent
static size_t meminfo_bytes(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%zu", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

size_t file_map_huge_bytes(const void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    const unsigned long want = (unsigned long)(uintptr_t)addr;
    char line[512];
    int ours = 0;
    size_t kb = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { // a mapping's first line
            ours = lo == want;
            continue;
        }
        if (ours && sscanf(line, "FilePmdMapped: %zu kB", &kb) == 1) break;
    }
    fclose(f);
    return kb * 1024;
}

void *file_map(int fd, size_t nbytes, size_t reread_min, FileMapInfo *info) {
    memset(info, 0, sizeof *info);
    void *map = mmap(NULL, nbytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return map;
    madvise(map, nbytes, MADV_HUGEPAGE); // the page cache may fill it with 2 MB folios
    // Small files, and files larger than the free memory (reading them all in would only
    // push out their own first pages): reading ahead is all we ask.
    if (nbytes < reread_min || nbytes > meminfo_bytes("MemAvailable") ||
        madvise(map, nbytes, MADV_POPULATE_READ) != 0) {
        madvise(map, nbytes, MADV_WILLNEED);
        return map;
    }
    info->populated = 1;
    info->huge_before = info->huge_bytes = file_map_huge_bytes(map);
    // Read again only where it can help: an address that 2 MB pages can map, a local file
    // system, and a kernel that makes huge file pages at all (some part of this file, or of
    // another, came in 2 MB folios); otherwise every load would re-read the file for nothing.
    const int can = (uintptr_t)map % PMD_BYTES == 0 && reread_can_help(fd) &&
                    (info->huge_before > 0 || meminfo_bytes("FileHugePages") > 0);
    if (can && info->huge_before < nbytes / 2) {
        madvise(map, nbytes, MADV_DONTNEED);          // let go of the 4 KB pages...
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); // ...so that the page cache drops them
        madvise(map, nbytes, MADV_POPULATE_READ);     // and read through the huge mapping
        info->reread = 1;
        info->huge_bytes = file_map_huge_bytes(map);
    }
    return map;
}
