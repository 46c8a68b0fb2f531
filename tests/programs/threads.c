/* Test target: threads parked in distinct named functions.
 *   threads [N_EXTRA] : main + nanosleep + pipe read + condition wait threads, plus N_EXTRA
 *                       more nanosleep threads; prints "READY <pid>" when all are parked.
 *   Env THREADS_EXIT_MAIN=1: the main thread calls pthread_exit (zombie leader).
 *   Env SECRET_ENV is never read: tests put a secret there and look for it in the dump. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int pipe_fds[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile int never;
static pthread_barrier_t ready;

__attribute__((noinline)) void park_in_nanosleep(void) {
    struct timespec ts = {3600, 0};
    for (;;) nanosleep(&ts, NULL);
}

__attribute__((noinline)) void park_in_read(void) {
    char c;
    for (;;) {
        if (read(pipe_fds[0], &c, 1) == 0) pause();
    }
}

__attribute__((noinline)) void park_in_condwait(void) {
    pthread_mutex_lock(&mu);
    while (!never) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

__attribute__((noinline)) void main_park(void) {
    for (;;) pause();
}

static void *run(void *arg) {
    void (*fn)(void) = (void (*)(void))arg;
    pthread_barrier_wait(&ready);
    fn();
    return NULL;
}

int main(int argc, char **argv) {
    int extra = argc > 1 ? atoi(argv[1]) : 0;
    static void (*const fns[])(void) = {park_in_nanosleep, park_in_read, park_in_condwait};
    static const char *const names[] = {"sleeper", "reader", "waiter"};
    int n = 3 + extra;
    if (pipe(pipe_fds) != 0) return 1;
    pthread_barrier_init(&ready, NULL, n + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        void (*fn)(void) = i < 3 ? fns[i] : park_in_nanosleep;
        if (pthread_create(&t, &attr, run, (void *)fn) != 0) {
            perror("pthread_create");
            return 1;
        }
        char name[16];
        snprintf(name, sizeof name, "%s", i < 3 ? names[i] : "extra");
        pthread_setname_np(t, name);
    }
    pthread_barrier_wait(&ready);
    usleep(100000); /* let every thread reach its parking syscall */
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    if (getenv("THREADS_EXIT_MAIN")) pthread_exit(NULL);
    main_park();
    return 0;
}
