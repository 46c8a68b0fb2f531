/* Redaction test target: secrets planted in the heap, on a thread's stack (as locals and
 * as a by-value argument), as ASCII and as UTF-16LE, in argv and in thread names.
 *
 *   secrets MAIN_NAME WORKER_NAME [ARG...]  < values
 *
 * stdin holds 5*NK lines (NK kinds), for each kind in turn: heap ASCII, heap UTF-16,
 * stack ASCII, stack UTF-16, argument ASCII; '|' in a line stands for a newline.
 * Prints "READY <pid>" once both threads are parked. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define NK 9
#define W 320

static char lines[5 * NK][W];
static const char *worker_name;
static pthread_barrier_t ready;

struct bundle { char s[NK][W]; };

static void to_utf16(uint16_t *dst, const char *src) {
    size_t i = 0;
    for (; src[i]; i++) dst[i] = (unsigned char)src[i];
    dst[i] = 0;
}

static void __attribute__((noinline)) park_with_args(struct bundle b) {
    __asm__ volatile("" : : "r"(&b) : "memory");
    for (;;) pause();
}

static void *worker(void *arg) {
    (void)arg;
    char local_ascii[NK][W];
    uint16_t local_utf16[NK][W];
    struct bundle b;
    for (int k = 0; k < NK; k++) {
        strcpy(local_ascii[k], lines[5 * k + 2]);
        to_utf16(local_utf16[k], lines[5 * k + 3]);
        strcpy(b.s[k], lines[5 * k + 4]);
    }
    __asm__ volatile("" : : "r"(local_ascii), "r"(local_utf16) : "memory");
    pthread_setname_np(pthread_self(), worker_name);
    pthread_barrier_wait(&ready);
    park_with_args(b);
    return NULL;
}

static void __attribute__((noinline)) main_park(char **heap) {
    __asm__ volatile("" : : "r"(heap) : "memory");
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    worker_name = argv[2];
    for (int i = 0; i < 5 * NK; i++) {
        if (!fgets(lines[i], W, stdin)) { fprintf(stderr, "short input\n"); return 2; }
        lines[i][strcspn(lines[i], "\n")] = 0;
        for (char *p = lines[i]; *p; p++) if (*p == '|') *p = '\n';
    }
    char *heap[2 * NK];  /* pointers on the main stack: referenced windows reach them */
    for (int k = 0; k < NK; k++) {
        heap[2 * k] = strdup(lines[5 * k]);
        uint16_t *u = malloc(2 * (strlen(lines[5 * k + 1]) + 1));
        to_utf16(u, lines[5 * k + 1]);
        heap[2 * k + 1] = (char *)u;
    }
    prctl(PR_SET_NAME, argv[1]);
    pthread_barrier_init(&ready, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&ready);
    /* the stdin copies are wiped: each value is where the test put it (and in argv) */
    memset(lines, 0, sizeof lines);
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    main_park(heap);
    return 0;
}
