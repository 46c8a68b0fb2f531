/* Windows test target (built with x86_64-w64-mingw32-gcc, run under Wine or Windows):
 * threads parked in distinct named functions.
 *
 *   win_threads.exe [N_EXTRA]
 *       main thread + Sleep, event wait, pipe read (standard input) and condition-variable
 *       threads, plus N_EXTRA more Sleep threads; every thread is named with
 *       SetThreadDescription where it exists. Prints "READY <pid>" once all are parked,
 *       then parks the main thread. Each line read from standard input is answered with
 *       "PONG <count>" on standard output: a test can tell that the process runs.
 *   win_threads.exe --threads PID
 *       prints the thread ids of process PID from a Toolhelp32 snapshot, one per line.
 *   win_threads.exe --modules PID
 *       prints "BASE SIZE PATH" (hex, hex, path) for every module of PID (Toolhelp32).
 *   win_threads.exe --alive PID
 *       exit status 0 when PID is a running process, 1 when it has exited or never was.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef HRESULT(WINAPI *set_description_fn)(HANDLE, PCWSTR);

static HANDLE never_event;
static HANDLE pipe_read, pipe_write;
static CRITICAL_SECTION cs;
static CONDITION_VARIABLE cv;
static volatile int never;
static volatile LONG started;

__attribute__((noinline)) void park_in_sleep(void) {
    for (;;) Sleep(INFINITE);
}

__attribute__((noinline)) void park_in_event(void) {
    for (;;) WaitForSingleObject(never_event, INFINITE);
}

/* Reads standard input (a pipe from the test): every line is answered with "PONG <n>",
 * which shows that the process runs (and is not frozen) at that moment. */
__attribute__((noinline)) void park_in_pipe(void) {
    HANDLE in = GetStdHandle(STD_INPUT_HANDLE);
    char buf[256];
    DWORD n, i;
    long pongs = 0;
    for (;;) {
        if (!ReadFile(in, buf, sizeof buf, &n, NULL) || n == 0) {
            /* no stdin, or EOF: park on a pipe nobody writes to */
            for (;;) ReadFile(pipe_read, buf, 1, &n, NULL);
        }
        for (i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                printf("PONG %ld\n", ++pongs);
                fflush(stdout);
            }
        }
    }
}

__attribute__((noinline)) void park_in_condvar(void) {
    EnterCriticalSection(&cs);
    while (!never) SleepConditionVariableCS(&cv, &cs, INFINITE);
    LeaveCriticalSection(&cs);
}

__attribute__((noinline)) void main_park(void) {
    for (;;) SleepEx(INFINITE, FALSE);
}

static DWORD WINAPI run(LPVOID arg) {
    void (*fn)(void) = (void (*)(void))arg;
    InterlockedIncrement(&started);
    fn();
    return 0;
}

static void name_thread(HANDLE thread, const wchar_t *name) {
    set_description_fn set = (set_description_fn)(void *)GetProcAddress(
        GetModuleHandleW(L"kernel32.dll"), "SetThreadDescription");
    if (!set)
        set = (set_description_fn)(void *)GetProcAddress(GetModuleHandleW(L"kernelbase.dll"),
                                                         "SetThreadDescription");
    if (set) set(thread, name);
}

static int list_threads(DWORD pid) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    THREADENTRY32 te;
    if (snap == INVALID_HANDLE_VALUE) return 2;
    te.dwSize = sizeof te;
    if (Thread32First(snap, &te)) {
        do {
            if (te.th32OwnerProcessID == pid) printf("%lu\n", (unsigned long)te.th32ThreadID);
            te.dwSize = sizeof te;
        } while (Thread32Next(snap, &te));
    }
    CloseHandle(snap);
    return 0;
}

static int list_modules(DWORD pid) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPMODULE, pid);
    MODULEENTRY32W me;
    if (snap == INVALID_HANDLE_VALUE) return 2;
    me.dwSize = sizeof me;
    if (Module32FirstW(snap, &me)) {
        do {
            char path[MAX_PATH * 4];
            WideCharToMultiByte(CP_UTF8, 0, me.szExePath, -1, path, sizeof path, NULL, NULL);
            printf("%llx %lx %s\n", (unsigned long long)(ULONG_PTR)me.modBaseAddr,
                   (unsigned long)me.modBaseSize, path);
            me.dwSize = sizeof me;
        } while (Module32NextW(snap, &me));
    }
    CloseHandle(snap);
    return 0;
}

static int alive(DWORD pid) {
    DWORD code = 0;
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
    if (!h) return 1;
    if (!GetExitCodeProcess(h, &code)) code = 0;
    CloseHandle(h);
    return code == STILL_ACTIVE ? 0 : 1;
}

int main(int argc, char **argv) {
    static void (*const fns[])(void) = {park_in_sleep, park_in_event, park_in_pipe,
                                        park_in_condvar};
    static const wchar_t *const names[] = {L"sleeper", L"event-waiter", L"pipe-reader",
                                           L"cv-waiter"};
    int extra, n, i;

    if (argc == 3 && strcmp(argv[1], "--threads") == 0) return list_threads(strtoul(argv[2], 0, 10));
    if (argc == 3 && strcmp(argv[1], "--modules") == 0) return list_modules(strtoul(argv[2], 0, 10));
    if (argc == 3 && strcmp(argv[1], "--alive") == 0) return alive(strtoul(argv[2], 0, 10));

    extra = argc > 1 ? atoi(argv[1]) : 0;
    n = 4 + extra;
    never_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!never_event || !CreatePipe(&pipe_read, &pipe_write, NULL, 0)) return 1;
    InitializeCriticalSection(&cs);
    InitializeConditionVariable(&cv);
    name_thread(GetCurrentThread(), L"main");
    for (i = 0; i < n; i++) {
        void (*fn)(void) = i < 4 ? fns[i] : park_in_sleep;
        HANDLE t = CreateThread(NULL, 256 * 1024, run, (void *)fn,
                                STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
        if (!t) {
            fprintf(stderr, "CreateThread failed: %lu\n", GetLastError());
            return 1;
        }
        name_thread(t, i < 4 ? names[i] : L"extra");
        CloseHandle(t);
    }
    while (started < n) Sleep(1);
    Sleep(200); /* let every thread reach its wait */
    printf("READY %lu\n", (unsigned long)GetCurrentProcessId());
    fflush(stdout);
    main_park();
    return 0;
}
