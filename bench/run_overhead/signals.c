/* signals N: raise and handle N SIGUSR1; prints how many the handler saw. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static volatile sig_atomic_t seen;
static void on_usr1(int sig) { (void)sig; seen++; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    for (long i = 0; i < n; i++) raise(SIGUSR1);
    printf("%ld\n", (long)seen);
    return seen == n ? 0 : 1;
}
