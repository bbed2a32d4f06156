// Mapping a checkpoint read-only, in 2 MB pages where the kernel can (docs/FORMAT.md,
// "Huge pages").
#ifndef MODEL_FILE_MAP_H
#define MODEL_FILE_MAP_H

#include <stddef.h>

// Files smaller than this are only mapped and read ahead: their page tables (under 0.5 MB)
// stay in cache beside the weights. Measured: stories110M's 438 MB decoded at the same
// tok/s from 4 KB and from 2 MB pages, Mistral-7B's 4.1 GB 6-10x faster from 2 MB pages.
#define FILE_MAP_REREAD_MIN ((size_t)256 << 20)

typedef struct {
    size_t huge_bytes;  // bytes of the mapping in 2 MB pages once mapped (0: unknown or none)
    size_t huge_before; // the same before the file was read again (= huge_bytes if it was not)
    int populated;      // 1: every page was read in at mapping time (MADV_POPULATE_READ)
    int reread;         // 1: the file's cached 4 KB pages were dropped and read again
} FileMapInfo;

// mmap(PROT_READ, MAP_PRIVATE) of fd's first nbytes; MAP_FAILED (errno set) on failure.
// Files of reread_min bytes or more that fit in the available memory are read in now,
// and when most of the file sits in the page cache in 4 KB pages (a file just written,
// copied or read with read()), those pages are dropped and read again through this
// mapping, which the kernel then fills with 2 MB pages where the file system supports it.
void *file_map(int fd, size_t nbytes, size_t reread_min, FileMapInfo *info);

// bytes of the mapping that starts at addr mapped by 2 MB page-table entries (the kernel's
// FilePmdMapped in /proc/self/smaps); 0 when unknown
size_t file_map_huge_bytes(const void *addr);

#endif
