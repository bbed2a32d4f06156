/* Tests for model/file_map.c: a checkpoint mapped in 2 MB pages where the kernel can.
 *
 * A 16 MiB file is written 4 KB at a time, which leaves it in the page cache in small
 * folios (what a converter's or cp's writes leave). file_map must give the file's bytes
 * whatever happens; on a kernel and file system that make huge file pages (probed first
 * with a file read in cold through a MADV_HUGEPAGE mapping), it must also end with most
 * of the mapping in 2 MB pages, and a second mapping must find them without reading the
 * file again. Elsewhere that part is skipped with a message. */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/file_map.h"

#define FILE_BYTES ((size_t)16 << 20)

static unsigned char byte_at(size_t i) { return (unsigned char)((i * 2654435761u) >> 13); }

// a temp file of FILE_BYTES written in 4 KB pieces; its path in `path`, its fd returned
static int write_small_pieces(char *path) {
    strcpy(path, "/tmp/mixattn-map-XXXXXX");
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    unsigned char page[4096];
    for (size_t off = 0; off < FILE_BYTES; off += sizeof page) {
        for (size_t i = 0; i < sizeof page; i++) page[i] = byte_at(off + i);
        assert_int_equal(write(fd, page, sizeof page), (ssize_t)sizeof page);
    }
    assert_int_equal(fdatasync(fd), 0); // clean pages: the page cache may drop them
    return fd;
}

static void assert_file_bytes(const unsigned char *map) {
    for (size_t i = 0; i < FILE_BYTES; i++)
        if (map[i] != byte_at(i)) fail_msg("byte %zu: %u, want %u", i, map[i], byte_at(i));
}

// Can this kernel and file system map a file in 2 MB pages? A file read in cold
// (its cache dropped) through a MADV_HUGEPAGE mapping tells.
static int kernel_makes_huge_file_pages(void) {
    char path[64];
    const int fd = write_small_pieces(path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    unsigned char *map = mmap(NULL, FILE_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
    assert_true(map != MAP_FAILED);
    int can = 0;
    if ((uintptr_t)map % ((uintptr_t)2 << 20) == 0 && madvise(map, FILE_BYTES, MADV_HUGEPAGE) == 0) {
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < FILE_BYTES; i += 4096) sink ^= map[i];
        (void)sink;
        can = file_map_huge_bytes(map) >= FILE_BYTES / 2;
    }
    munmap(map, FILE_BYTES);
    close(fd);
    unlink(path);
    return can;
}

static void test_small_pages_become_huge(void **state) {
    (void)state;
    char path[64];
    const int fd = write_small_pieces(path);
    FileMapInfo info;
    unsigned char *map = file_map(fd, FILE_BYTES, 0, &info);
    assert_true(map != MAP_FAILED);
    assert_file_bytes(map);
    if (!info.populated) { // kernels before 5.14 (no MADV_POPULATE_READ), or short of memory
        printf("skipped: the file was not read in at mapping time\n");
        goto done;
    }
    assert_int_equal(info.huge_bytes, file_map_huge_bytes(map));
    if (!kernel_makes_huge_file_pages()) {
        printf("skipped: this kernel or file system maps files in 4 KB pages only (%zu of %zu bytes in 2 MB pages)\n",
               info.huge_bytes, FILE_BYTES);
        goto done;
    }
    printf("in 2 MB pages: %zu bytes before re-reading, %zu after (re-read: %d)\n", info.huge_before,
           info.huge_bytes, info.reread);
    assert_true(info.huge_bytes >= FILE_BYTES / 2);

    // the page cache now holds 2 MB folios: a second mapping finds them, with no re-read
    FileMapInfo again;
    unsigned char *map2 = file_map(fd, FILE_BYTES, 0, &again);
    assert_true(map2 != MAP_FAILED);
    assert_int_equal(again.reread, 0);
    assert_true(again.huge_bytes >= FILE_BYTES / 2);
    assert_file_bytes(map2);
    munmap(map2, FILE_BYTES);
done:
    munmap(map, FILE_BYTES);
    close(fd);
    unlink(path);
}

// below reread_min the file is only mapped (and read ahead): nothing read in, nothing dropped
static void test_small_file_is_left_alone(void **state) {
    (void)state;
    char path[64];
    const int fd = write_small_pieces(path);
    FileMapInfo info;
    unsigned char *map = file_map(fd, FILE_BYTES, FILE_BYTES + 1, &info);
    assert_true(map != MAP_FAILED);
    assert_int_equal(info.populated, 0);
    assert_int_equal(info.reread, 0);
    assert_file_bytes(map);
    munmap(map, FILE_BYTES);
    close(fd);
    unlink(path);
}

static void test_bad_fd_fails(void **state) {
    (void)state;
    FileMapInfo info;
    assert_true(file_map(-1, FILE_BYTES, 0, &info) == MAP_FAILED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_pages_become_huge),
        cmocka_unit_test(test_small_file_is_left_alone),
        cmocka_unit_test(test_bad_fd_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
