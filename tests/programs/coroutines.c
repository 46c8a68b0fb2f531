/* Test target: threads running on coroutine stacks (makecontext) that all lie in one
 * anonymous mapping, as green threads and coroutines do: "coroutines" prints
 * "READY <pid> <mapping start> <mapping end>" once every thread is parked in coro_park. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define THREADS 4
#define STACK_SIZE (64 * 1024)

static char *arena;
static atomic_int parked;

__attribute__((noinline)) void coro_park(void) {
    atomic_fetch_add(&parked, 1);
    for (;;) pause();
}

__attribute__((noinline)) void coro_main(void) {
    coro_park();
}

static void *thread_main(void *arg) {
    long i = (long)arg;
    ucontext_t uc, back;
    getcontext(&uc);
    uc.uc_stack.ss_sp = arena + i * STACK_SIZE;
    uc.uc_stack.ss_size = STACK_SIZE;
    uc.uc_link = &back;
    makecontext(&uc, coro_main, 0);
    swapcontext(&back, &uc);
    return NULL;
}

int main(void) {
    arena = mmap(NULL, THREADS * STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) { perror("mmap"); return 1; }
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, thread_main, (void *)i);
    while (atomic_load(&parked) < THREADS) usleep(1000);
    printf("READY %d %p %p\n", (int)getpid(), (void *)arena,
           (void *)(arena + THREADS * STACK_SIZE));
    fflush(stdout);
    for (;;) pause();
}
