/* Hostile test targets, by mode:
 *   faults churn   : 4 threads create and end short-lived threads as fast as they can.
 *   faults signals : counts SIGUSR1; every handled signal writes "USR1\n" to stdout.
 *   faults vfork   : one thread sits in vfork() (its child sleeps), which ptrace cannot stop.
 * Each prints "READY <pid>" once set up, then parks the main thread in pause(). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

static void *spawner(void *arg) {
    (void)arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, &attr, nothing, NULL) != 0) usleep(100);
    }
    return NULL;
}

static void on_usr1(int sig) {
    (void)sig;
    static const char msg[] = "USR1\n";
    ssize_t r = write(1, msg, sizeof msg - 1);
    (void)r;
}

static void *vforker(void *arg) {
    (void)arg;
    pid_t child = vfork();
    if (child == 0) {
        sleep(3600);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "churn";
    pthread_t t;
    if (strcmp(mode, "churn") == 0) {
        for (int i = 0; i < 4; i++) pthread_create(&t, NULL, spawner, NULL);
    } else if (strcmp(mode, "signals") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigaction(SIGUSR1, &sa, NULL);
    } else if (strcmp(mode, "vfork") == 0) {
        pthread_create(&t, NULL, vforker, NULL);
        usleep(100000);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("READY %d\n", (int)getpid());
    fflush(stdout);
    for (;;) pause();
}
