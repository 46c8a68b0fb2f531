/* Test target for memory presets:
 *   memmarkers markers TAG : a heap buffer holding "HEAP-MARKER-TAG" and an MADV_DONTDUMP
 *                            mapping holding "DONTDUMP-MARKER-TAG";
 *                            prints "READY <pid> <heap address> <dontdump address>"
 *   memmarkers big TAG     : 4.5 GiB of anonymous memory, sparsely touched, with
 *                            "BIG-MARKER-TAG" 4.25 GiB into it;
 *                            prints "READY <pid> <marker address>" */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "markers";
    const char *tag = argc > 2 ? argv[2] : "x";
    if (!strcmp(mode, "markers")) {
        char *heap = malloc(4096);
        snprintf(heap, 4096, "HEAP-MARKER-%s", tag);
        char *dd = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        snprintf(dd, 8192, "DONTDUMP-MARKER-%s", tag);
        madvise(dd, 8192, MADV_DONTDUMP);
        printf("READY %d %p %p\n", (int)getpid(), (void *)heap, (void *)dd);
    } else {
        size_t size = (size_t)9 << 29; /* 4.5 GiB */
        char *big = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (big == MAP_FAILED) return 1;
        for (size_t off = 0; off < size; off += (size_t)256 << 20) big[off] = 1;
        char *marker = big + ((size_t)17 << 28); /* 4.25 GiB */
        snprintf(marker, 64, "BIG-MARKER-%s", tag);
        printf("READY %d %p\n", (int)getpid(), (void *)marker);
    }
    fflush(stdout);
    for (;;) pause();
}
