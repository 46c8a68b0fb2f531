/* Benchmark target: N parked threads, optional touched heap, and a ticker that measures
 * how long the process was frozen.
 *
 *   target N_THREADS [HEAP_MB [STACK_KB [TICK_US]]]
 *
 * - N_THREADS parked threads (default 8 MiB glibc stacks, about 6 KiB of stack in use, or
 *   STACK_KB KiB more: a written frame that stays live below the parking call),
 *   alternately blocked in futex(FUTEX_WAIT) and nanosleep.
 * - HEAP_MB MiB of anonymous memory, every page written (resident, not zero pages).
 * - The main thread is the ticker: clock_nanosleep(CLOCK_MONOTONIC, TICK_US, default
 *   1000 us) in a loop,
 *   recording the longest gap between two wakeups. The main thread is the first entry of
 *   /proc/PID/task, so every dumper stops it first: its gap spans the dumper's whole
 *   stop phase, the copy, and lasts until the dumper lets the main thread go again.
 * - A control thread reads commands on stdin, one per line, and answers on stdout:
 *     reset  -> "ok"                 (max gap := 0, counters cleared)
 *     gap    -> "<max_gap_us> <ticks> <gaps_over_5ms> <gap_start_us>"  after the ticker has
 *               woken twice more, so a freeze that just ended is counted; gap_start_us is
 *               when the longest gap began, CLOCK_MONOTONIC in microseconds
 *     quit   -> exits
 *   End of file on stdin also exits (the bench died: the target goes with it).
 * - Prints "READY <pid>" on stdout once every parked thread is asleep in the kernel.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int futex_word; /* never changes: FUTEX_WAIT sleeps forever */
static volatile int wake_up; /* never set; keeps the parking loops formally finite */
static int parked;     /* threads about to block */
static uint64_t max_gap_ns;
static uint64_t ticks;
static uint64_t long_gaps; /* gaps over 5 ms since reset */
static uint64_t max_gap_at_ns;
static size_t stack_bytes; /* extra stack each parked thread keeps in use */ /* CLOCK_MONOTONIC time at which the longest gap began */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) static void park_in_futex(void) {
    while (!wake_up) syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

__attribute__((noinline)) static void park_in_nanosleep(void) {
    struct timespec ts = {3600, 0};
    while (!wake_up) nanosleep(&ts, NULL);
}

/* A few frames with some touched stack, like a real thread that waits deep in a call. */
__attribute__((noinline)) static void descend(int depth, int kind) {
    volatile char buf[512];
    memset((char *)buf, depth, sizeof buf);
    if (depth > 0) {
        descend(depth - 1, kind);
    } else {
        __atomic_add_fetch(&parked, 1, __ATOMIC_SEQ_CST);
        if (kind) park_in_nanosleep();
        else park_in_futex();
    }
    buf[0]++;
}

static void *parked_thread(void *arg) {
    if (stack_bytes) {
        /* A big live frame above the parking frames: all of it lies between SP and the
         * stack top, so a dumper copies it. Written so that the pages are resident. */
        volatile char *big = __builtin_alloca(stack_bytes);
        memset((char *)big, 0x5a, stack_bytes);
        descend(6, (int)(intptr_t)arg & 1);
        big[0]++;
    } else {
        descend(6, (int)(intptr_t)arg & 1);
    }
    return NULL;
}

/* True when every thread other than the caller is sleeping (state S) in the kernel. */
static int all_asleep(pid_t self) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return 1;
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        pid_t tid = atoi(e->d_name);
        if (tid == self) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] != 'S') ok = 0;
    }
    closedir(d);
    return ok;
}

static void *control_thread(void *arg) {
    (void)arg;
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "reset", 5)) {
            __atomic_store_n(&max_gap_ns, 0, __ATOMIC_SEQ_CST);
            __atomic_store_n(&long_gaps, 0, __ATOMIC_SEQ_CST);
            printf("ok\n");
        } else if (!strncmp(line, "gap", 3)) {
            /* Let the ticker wake twice more so that a freeze that just ended is seen. */
            uint64_t t0 = __atomic_load_n(&ticks, __ATOMIC_SEQ_CST);
            uint64_t deadline = now_ns() + 2000000000ull;
            struct timespec ms = {0, 500000};
            while (__atomic_load_n(&ticks, __ATOMIC_SEQ_CST) < t0 + 2 && now_ns() < deadline)
                nanosleep(&ms, NULL);
            printf("%llu %llu %llu %llu\n",
                   (unsigned long long)(__atomic_load_n(&max_gap_ns, __ATOMIC_SEQ_CST) / 1000),
                   (unsigned long long)__atomic_load_n(&ticks, __ATOMIC_SEQ_CST),
                   (unsigned long long)__atomic_load_n(&long_gaps, __ATOMIC_SEQ_CST),
                   (unsigned long long)(__atomic_load_n(&max_gap_at_ns, __ATOMIC_SEQ_CST) / 1000));
        } else if (!strncmp(line, "quit", 4)) {
            fflush(stdout);
            _exit(0);
        } else {
            printf("error unknown command\n");
        }
        fflush(stdout);
    }
    _exit(0); /* stdin closed: the bench is gone */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s N_THREADS [HEAP_MB [STACK_KB [TICK_US]]]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    long heap_mb = argc > 2 ? atol(argv[2]) : 0;
    stack_bytes = argc > 3 ? (size_t)atol(argv[3]) * 1024 : 0;
    long tick_us = argc > 4 ? atol(argv[4]) : 1000;
    if (tick_us <= 0) tick_us = 1000;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (heap_mb > 0) {
        size_t len = (size_t)heap_mb << 20;
        char *heap = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (heap == MAP_FAILED) {
            perror("mmap heap");
            return 1;
        }
        for (size_t i = 0; i < len; i += 4096) heap[i] = (char)(i >> 12) | 1;
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack_bytes) {
        size_t size = 8u << 20; /* glibc's default, unless the frame needs more */
        if (stack_bytes + (1u << 20) > size) size = stack_bytes + (1u << 20);
        pthread_attr_setstacksize(&attr, size);
    }
    for (int i = 0; i < n; i++) {
        pthread_t t;
        int rc = pthread_create(&t, &attr, parked_thread, (void *)(intptr_t)i);
        if (rc) {
            fprintf(stderr, "pthread_create %d: %s\n", i, strerror(rc));
            return 1;
        }
        pthread_detach(t);
    }
    /* Control thread last, so the parked threads come right after main in /proc/PID/task. */
    pthread_t ctl;
    if (pthread_create(&ctl, NULL, control_thread, NULL)) return 1;
    pthread_detach(ctl);

    pid_t self = (pid_t)syscall(SYS_gettid);
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 20000 && __atomic_load_n(&parked, __ATOMIC_SEQ_CST) < n; i++)
        nanosleep(&ms, NULL);
    for (int i = 0; i < 5000 && !all_asleep(self); i++) nanosleep(&ms, NULL);
    if (__atomic_load_n(&parked, __ATOMIC_SEQ_CST) < n) {
        fprintf(stderr, "only %d of %d threads parked\n", parked, n);
        return 1;
    }
    printf("READY %d\n", (int)getpid());

    /* The ticker. */
    struct timespec tick = {tick_us / 1000000, (tick_us % 1000000) * 1000};
    uint64_t prev = now_ns();
    for (;;) {
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &tick, NULL) == EINTR) {
        }
        uint64_t t = now_ns();
        uint64_t gap = t - prev;
        prev = t;
        if (gap > __atomic_load_n(&max_gap_ns, __ATOMIC_RELAXED)) {
            __atomic_store_n(&max_gap_at_ns, t - gap, __ATOMIC_SEQ_CST);
            __atomic_store_n(&max_gap_ns, gap, __ATOMIC_SEQ_CST);
        }
        if (gap > 5000000ull) __atomic_add_fetch(&long_gaps, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&ticks, 1, __ATOMIC_SEQ_CST);
    }
}
