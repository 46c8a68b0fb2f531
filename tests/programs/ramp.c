/* Workloads for `watch` triggers: ramps that say when they cross a threshold.
 *
 *   ramp mem STEP_MB EVERY_MS    grow resident memory by STEP_MB every EVERY_MS
 *   ramp threads EVERY_MS        start a parked thread every EVERY_MS
 *   ramp fds EVERY_MS            open /dev/null every EVERY_MS
 *   ramp spin IDLE_MS            idle IDLE_MS, then spin one core forever
 *   ramp signal SIGNO            handle SIGNO (counting), park
 *   ramp exit CODE DELAY_MS      park DELAY_MS, then exit(CODE) (CODE<0: raise SIGSEGV)
 *
 * Prints "READY <pid>" first; each step prints "STEP <value> <monotonic seconds>" where
 * value is MiB, threads or fds after the step, or "SPIN <monotonic>" when spinning starts.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

static void *park(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static volatile sig_atomic_t handled;
static void on_signal(int sig) { (void)sig; handled++; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    printf("READY %d\n", getpid());
    fflush(stdout);
    if (!strcmp(mode, "mem") && argc >= 4) {
        long step = atol(argv[2]) << 20, every = atol(argv[3]), total = 0;
        for (;;) {
            sleep_ms(every);
            char *p = malloc(step);
            if (!p) return 3;
            memset(p, 0x5a, step);
            total += step;
            printf("STEP %ld %.6f\n", total >> 20, now());
            fflush(stdout);
        }
    } else if (!strcmp(mode, "threads") && argc >= 3) {
        long every = atol(argv[2]);
        for (int n = 2;; n++) {
            sleep_ms(every);
            pthread_t t;
            if (pthread_create(&t, NULL, park, NULL)) return 3;
            printf("STEP %d %.6f\n", n, now());
            fflush(stdout);
        }
    } else if (!strcmp(mode, "fds") && argc >= 3) {
        long every = atol(argv[2]);
        for (;;) {
            sleep_ms(every);
            int fd = open("/dev/null", O_RDONLY);
            if (fd < 0) return 3;
            printf("STEP %d %.6f\n", fd + 1, now());
            fflush(stdout);
        }
    } else if (!strcmp(mode, "spin") && argc >= 3) {
        sleep_ms(atol(argv[2]));
        printf("SPIN %.6f\n", now());
        fflush(stdout);
        volatile unsigned long x = 0;
        for (;;) x++;
    } else if (!strcmp(mode, "signal") && argc >= 3) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(atoi(argv[2]), &sa, NULL);
        printf("ADDR %p\n", (void *)&handled);
        fflush(stdout);
        for (;;) {
            pause();
            printf("HANDLED %d\n", (int)handled);
            fflush(stdout);
        }
    } else if (!strcmp(mode, "exit") && argc >= 4) {
        sleep_ms(atol(argv[3]));
        int code = atoi(argv[2]);
        if (code < 0) raise(SIGSEGV);
        exit(code);
    }
    return 2;
}
