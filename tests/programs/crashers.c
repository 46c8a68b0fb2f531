/* Test programs for `generate_dump run`, by mode:
 *   crashers segv        : NULL dereference in crash_in_main() on the main thread
 *   crashers segv-thread : NULL dereference in crash_in_worker() on a second thread
 *   crashers abort       : abort() from abort_here()
 *   crashers handled     : SIGSEGV caught by a handler that recovers; exits 0
 *   crashers reraise     : SIGSEGV caught by a handler that restores SIG_DFL and re-raises
 *   crashers hang-child  : forks a child; both hang (parent in waitpid, child in pause)
 *   crashers child-segv  : forks a child that crashes; the parent exits with 3
 *   crashers exit N      : exits with status N
 *   crashers signals N   : handles N raised SIGUSR1 plus SIGALRM and SIGPROF from interval
 *                          timers; prints the counts; exits 0 only if none was lost
 *   crashers hang-daemon : forks a child that double-forks a daemon (setsid) and exits;
 *                          prints "DAEMON <pid>" and hangs in pause, as does the daemon */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int *volatile null_ptr = NULL;
static sigjmp_buf recover;

__attribute__((noinline)) void crash_in_main(void) { *null_ptr = 1; }
__attribute__((noinline)) void crash_in_worker(void) { *null_ptr = 2; }
__attribute__((noinline)) void abort_here(void) { abort(); }
__attribute__((noinline)) void hang_here(void) { for (;;) pause(); }

static void *worker(void *arg) {
    usleep(50000);
    crash_in_worker();
    return arg;
}

static void *idle(void *arg) {
    for (;;) sleep(100);
    return arg;
}

static volatile sig_atomic_t usr1_seen, alrm_seen, prof_seen;
static void on_count(int sig) {
    if (sig == SIGUSR1) usr1_seen++;
    else if (sig == SIGALRM) alrm_seen++;
    else if (sig == SIGPROF) prof_seen++;
}

static int count_signals(long n) {
    struct sigaction sa = {0};
    sa.sa_handler = on_count;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every_ms = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &every_ms, NULL);
    setitimer(ITIMER_PROF, &every_ms, NULL);
    for (long i = 0; i < n; i++) raise(SIGUSR1);
    /* Busy until both timers fired 20 times: SIGPROF counts CPU time, SIGALRM wall time. */
    volatile unsigned long spin = 0;
    while (alrm_seen < 20 || prof_seen < 20) spin++;
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    setitimer(ITIMER_PROF, &off, NULL);
    printf("USR1 %ld ALRM>=20 PROF>=20\n", (long)usr1_seen);
    return usr1_seen == n ? 0 : 1;
}

static void on_segv_recover(int sig) {
    (void)sig;
    siglongjmp(recover, 1);
}

static void on_segv_reraise(int sig) {
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "segv";
    pthread_t t;
    if (!strcmp(mode, "segv")) {
        pthread_create(&t, NULL, idle, NULL);
        usleep(20000);
        crash_in_main();
    } else if (!strcmp(mode, "segv-thread")) {
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
    } else if (!strcmp(mode, "abort")) {
        abort_here();
    } else if (!strcmp(mode, "handled")) {
        signal(SIGSEGV, on_segv_recover);
        if (sigsetjmp(recover, 1) == 0) crash_in_main();
        printf("recovered\n");
        return 0;
    } else if (!strcmp(mode, "reraise")) {
        signal(SIGSEGV, on_segv_reraise);
        crash_in_main();
    } else if (!strcmp(mode, "hang-child")) {
        pid_t child = fork();
        if (child == 0) hang_here();
        printf("CHILD %d\n", (int)child);
        fflush(stdout);
        waitpid(child, NULL, 0);
    } else if (!strcmp(mode, "child-segv")) {
        pid_t child = fork();
        if (child == 0) crash_in_main();
        int status;
        waitpid(child, &status, 0);
        return 3;
    } else if (!strcmp(mode, "signals")) {
        return count_signals(argc > 2 ? atol(argv[2]) : 1000);
    } else if (!strcmp(mode, "hang-daemon")) {
        int fds[2];
        if (pipe(fds)) return 98;
        pid_t child = fork();
        if (child == 0) {
            if (fork() == 0) {
                setsid();
                dprintf(fds[1], "%d\n", (int)getpid());
                hang_here();
            }
            _exit(0);
        }
        waitpid(child, NULL, 0);
        char buf[32] = {0};
        if (read(fds[0], buf, sizeof buf - 1) <= 0) return 97;
        printf("DAEMON %d", atoi(buf));
        printf("\n");
        fflush(stdout);
        hang_here();
    } else if (!strcmp(mode, "exit")) {
        return argc > 2 ? atoi(argv[2]) : 0;
    }
    return 99;
}
