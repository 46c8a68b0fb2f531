/* The floor: the least a ptrace dumper must do to copy every thread's registers and stack.
 *
 *   probe PID [-o FILE]
 *
 * Before the freeze: read /proc/PID/maps. Then, for every thread in /proc/PID/task:
 * PTRACE_SEIZE + PTRACE_INTERRUPT; then for each, waitpid(__WALL) and PTRACE_GETREGS;
 * process_vm_readv of each stack (SP-128 up to the end of the mapping that holds SP;
 * non-main threads stop at fs_base when it lies inside that range); PTRACE_DETACH every
 * thread, in the order they were stopped. With -o, writes one line of totals to FILE.
 * Prints "probe: N threads, ..., frozen U us (...)" on stderr: first SEIZE to last DETACH as
 * the probe sees it, and the time of each phase.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PTRACE_SEIZE
#define PTRACE_SEIZE 0x4206
#endif
#ifndef PTRACE_INTERRUPT
#define PTRACE_INTERRUPT 0x4207
#endif

struct map {
    uint64_t start, end;
};

static struct map *maps;
static size_t nmaps;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int read_maps(int pid) {
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t cap = 1024;
    maps = malloc(cap * sizeof *maps);
    while (fgets(line, sizeof line, f)) {
        unsigned long long a, b;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s", &a, &b, perms) != 3) continue;
        if (perms[0] != 'r') continue; /* only readable mappings can hold a stack we copy */
        if (nmaps == cap) maps = realloc(maps, (cap *= 2) * sizeof *maps);
        maps[nmaps].start = a;
        maps[nmaps].end = b;
        nmaps++;
    }
    fclose(f);
    return 0;
}

static const struct map *find_map(uint64_t addr) {
    size_t lo = 0, hi = nmaps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (addr < maps[mid].start) hi = mid;
        else if (addr >= maps[mid].end) lo = mid + 1;
        else return &maps[mid];
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PID [-o FILE]\n", argv[0]);
        return 2;
    }
    int pid = atoi(argv[1]);
    const char *out = (argc > 3 && !strcmp(argv[2], "-o")) ? argv[3] : NULL;
    if (read_maps(pid) != 0) {
        perror("maps");
        return 1;
    }

    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) {
        perror("task");
        return 1;
    }
    size_t cap = 1024, n = 0;
    int *tids = malloc(cap * sizeof *tids);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) tids = realloc(tids, (cap *= 2) * sizeof *tids);
        tids[n++] = atoi(e->d_name);
    }
    closedir(d);

    char *stopped = calloc(n, 1);
    struct user_regs_struct *regs = calloc(n, sizeof *regs);
    char **bufs = calloc(n, sizeof *bufs);
    uint64_t t0 = now_ns();
    uint64_t t_seized = t0;
    for (size_t i = 0; i < n; i++) {
        if (ptrace(PTRACE_SEIZE, tids[i], 0, 0) != 0) continue;
        stopped[i] = 1;
        ptrace(PTRACE_INTERRUPT, tids[i], 0, 0);
    }
    t_seized = now_ns();
    for (size_t i = 0; i < n; i++) {
        if (!stopped[i]) continue;
        int status;
        if (waitpid(tids[i], &status, __WALL) != tids[i] || !WIFSTOPPED(status)) {
            stopped[i] = 0;
            continue;
        }
        if (ptrace(PTRACE_GETREGS, tids[i], 0, &regs[i]) != 0) stopped[i] = 2;
    }
    uint64_t t_regs = now_ns();
    uint64_t total = 0;
    size_t copied = 0;
    for (size_t i = 0; i < n; i++) {
        if (stopped[i] != 1) continue;
        uint64_t sp = regs[i].rsp;
        const struct map *m = find_map(sp);
        if (!m) continue;
        uint64_t start = sp - 128 < m->start ? m->start : sp - 128;
        uint64_t end = m->end;
        if (tids[i] != pid && regs[i].fs_base > start && regs[i].fs_base < end)
            end = regs[i].fs_base;
        size_t len = end - start;
        bufs[i] = malloc(len);
        struct iovec local = {bufs[i], len}, remote = {(void *)start, len};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got > 0) {
            total += (uint64_t)got;
            copied++;
        }
    }
    uint64_t t_read = now_ns();
    size_t traced = 0;
    for (size_t i = 0; i < n; i++) {
        if (!stopped[i]) continue;
        ptrace(PTRACE_DETACH, tids[i], 0, 0);
        traced++;
    }
    uint64_t t1 = now_ns();
    fprintf(stderr,
            "probe: %zu threads, %zu stacks, %llu stack bytes, frozen %llu us "
            "(seize+interrupt %llu, wait+getregs %llu, stacks %llu, detach %llu)\n",
            traced, copied, (unsigned long long)total, (unsigned long long)((t1 - t0) / 1000),
            (unsigned long long)((t_seized - t0) / 1000),
            (unsigned long long)((t_regs - t_seized) / 1000),
            (unsigned long long)((t_read - t_regs) / 1000),
            (unsigned long long)((t1 - t_read) / 1000));
    if (out) {
        FILE *f = fopen(out, "w");
        if (f) {
            fprintf(f, "threads %zu stacks %zu bytes %llu\n", traced, copied,
                    (unsigned long long)total);
            fclose(f);
        }
    }
    return traced == n ? 0 : 1;
}
