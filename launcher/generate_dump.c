/* The `generate_dump` command, when a C compiler was at hand at install time (setup.py).
 *
 * `generate_dump run [OPTIONS] -- COMMAND...` is a CI wrapper: every millisecond before
 * COMMAND starts is added to the run it wraps, and Python needs 10-15 ms to start. So for a
 * plain `run` (the same spellings run_session.fast_path accepts, checked by
 * tests/test_launcher.py) this program starts COMMAND itself, at once, exactly as
 * run_session would have (process group, RLIMIT_CORE raised for crash capture, child
 * subreaper), and then becomes the Python program (execve of generate_dump-python, beside
 * it), which adopts COMMAND: same pid, so COMMAND's parent is run as before. Meanwhile:
 * - the signals run forwards are blocked from before the spawn until Python handles
 *   them, so one sent in between is forwarded, not fatal (COMMAND gets the caller's mask);
 * - GENERATE_DUMP_RUN_ADOPT tells Python the pid and when it started; COMMAND never sees it.
 * Anything else (other subcommands, --trace, odd spellings, a failed spawn) goes to the
 * Python program untouched, which does the work and reports errors as it always has.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SCRIPT "generate_dump-python"
#define ADOPT_VAR "GENERATE_DUMP_RUN_ADOPT"

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

/* The parsed `run` line: what the early start needs. */
struct run_line {
    int command;                /* index of COMMAND in argv */
    const char *output_dir;
    unsigned long long core_limit;
};

static int is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* run_session.duration's language, or a subset: 90, 30s, 500ms, 5m, 1h; > 0. */
static int valid_duration(const char *s) {
    while (is_space(*s)) s++;
    const char *num = s;
    if (!is_digit(*s)) return 0;
    while (is_digit(*s)) s++;
    if (*s == '.') { s++; while (is_digit(*s)) s++; }
    if (strtod(num, NULL) <= 0) return 0;
    while (is_space(*s)) s++;
    if (s[0] == 'm' && s[1] == 's') s += 2;
    else if (*s == 's' || *s == 'm' || *s == 'h') s++;
    while (is_space(*s)) s++;
    return *s == 0;
}

/* run_session.size's language, or a subset: 0, 4096, 512M, 2G, 2GiB. */
static int parse_size(const char *s, unsigned long long *out) {
    unsigned long long n = 0;
    while (is_space(*s)) s++;
    if (!is_digit(*s)) return 0;
    for (; is_digit(*s); s++) {
        if (n > (ULLONG_MAX - 9) / 10) return 0;
        n = n * 10 + (unsigned)(*s - '0');
    }
    while (is_space(*s)) s++;
    int shift = 0;
    switch (*s) {
    case 'k': case 'K': shift = 10; s++; break;
    case 'm': case 'M': shift = 20; s++; break;
    case 'g': case 'G': shift = 30; s++; break;
    }
    if (*s == 'i' && (s[1] == 'b' || s[1] == 'B')) s += 2;
    else if (*s == 'b' || *s == 'B') s++;
    while (is_space(*s)) s++;
    if (*s != 0 || (shift && n > (ULLONG_MAX >> shift))) return 0;
    *out = n << shift;
    return 1;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++) if (!is_digit(*s)) return 0;
    return 1;
}

/* Like run_session.fast_path: 1 and *line filled when argv[2:] is a plain `run` line. */
static int parse_run(int argc, char **argv, struct run_line *line) {
    static const char *valued[] = {"--timeout", "--output-dir", "--max-dumps",
                                   "--kill-after", "--core-limit"};
    const char *values[5] = {NULL, ".", "10", "5s", "2G"};
    int i = 2;
    for (;; i++) {
        if (i >= argc) return 0;
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) { line->command = i + 1; break; }
        if (arg[0] != '-') {
            for (int j = i; j < argc; j++)
                if (argv[j][0] == '-' && strcmp(argv[j], "-") != 0) return 0;
            line->command = i;
            break;
        }
        if (!strcmp(arg, "--dump-on-signal") || !strcmp(arg, "--redact")
            || !strcmp(arg, "--no-redact"))
            continue;
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        int k;
        for (k = 0; k < 5; k++)
            if (strlen(valued[k]) == name_len && !strncmp(arg, valued[k], name_len)) break;
        if (k == 5) return 0;
        if (eq) values[k] = eq + 1;
        else if (i + 1 < argc) values[k] = argv[++i];
        else return 0;
    }
    if (line->command >= argc) return 0;
    if (values[0] && !valid_duration(values[0])) return 0;
    if (!*values[1] || !all_digits(values[2]) || !valid_duration(values[3])) return 0;
    if (!parse_size(values[4], &line->core_limit)) return 0;
    line->output_dir = values[1];
    return 1;
}

/* os.makedirs(dir, exist_ok=True); 0 on success. */
static int make_dirs(const char *dir) {
    char path[PATH_MAX];
    struct stat st;
    if (strlen(dir) >= sizeof path) return -1;
    strcpy(path, dir);
    for (char *p = path + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(path, 0777) != 0 && errno != EEXIST) return -1;
            *p = c;
            if (c == 0) break;
        }
    }
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* The RLIMIT_CORE that Supervisor._crash_setup gives the command, or 0 for "as it is":
 * cores must land in files it can follow (not a pipe, no %-directory), inotify must work,
 * and the hard limit must allow a core; coredumps.raised_core_limit then says how much. */
static int core_limit_for_command(unsigned long long bound, struct rlimit *out) {
    char pattern[256] = "";
    struct rlimit now;
    FILE *f = fopen("/proc/sys/kernel/core_pattern", "r");
    if (f) {
        if (!fgets(pattern, sizeof pattern, f)) pattern[0] = 0;
        fclose(f);
    }
    if (bound == 0 || pattern[0] == '|') return 0;
    char *slash = strrchr(pattern, '/');
    if (slash && memchr(pattern, '%', (size_t)(slash - pattern))) return 0;
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0) return 0;
    close(fd);
    if (getrlimit(RLIMIT_CORE, &now) != 0 || now.rlim_max == 0) return 0;
    rlim_t want = now.rlim_max == RLIM_INFINITY || bound < now.rlim_max ? bound : now.rlim_max;
    if (now.rlim_cur == RLIM_INFINITY || now.rlim_cur >= want) return 0;
    out->rlim_cur = want;
    out->rlim_max = now.rlim_max;
    return 1;
}

/* Start COMMAND as run_session would; its pid, or 0 to leave everything to Python. */
static pid_t start_command(char **command, const struct run_line *line, sigset_t *old_mask) {
    struct sigaction chld;
    if (sigaction(SIGCHLD, NULL, &chld) != 0 || chld.sa_handler == SIG_IGN)
        return 0;  /* the command would be reaped unseen: Python's fork path handles this */
    if (make_dirs(line->output_dir) != 0)
        return 0;  /* Python says why */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        return 0;
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++)
        sigaddset(&forwarded, FORWARDED[i]);
    sigprocmask(SIG_BLOCK, &forwarded, old_mask);

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    short flags = POSIX_SPAWN_SETSIGMASK;
    posix_spawnattr_setsigmask(&attr, old_mask);
    if (!isatty(0)) {  /* like timeout(1): its own group, so signals reach all of it */
        flags |= POSIX_SPAWN_SETPGROUP;
        posix_spawnattr_setpgroup(&attr, 0);
    }
    posix_spawnattr_setflags(&attr, flags);
    struct rlimit ours, theirs;
    int raise = core_limit_for_command(line->core_limit, &theirs);
    if (raise && (getrlimit(RLIMIT_CORE, &ours) != 0 || setrlimit(RLIMIT_CORE, &theirs) != 0))
        raise = 0;
    pid_t pid = 0;
    if (posix_spawnp(&pid, command[0], NULL, &attr, command, environ) != 0)
        pid = 0;
    if (raise)
        setrlimit(RLIMIT_CORE, &ours);
    posix_spawnattr_destroy(&attr);
    if (pid == 0)
        sigprocmask(SIG_SETMASK, old_mask, NULL);
    return pid;
}

/* generate_dump-python beside this program (found through /proc/self/exe, which resolves
 * symbolic links such as pipx's, else through argv[0]); 0 on success. */
static int find_script(char *script, size_t size, const char *argv0) {
    ssize_t n = readlink("/proc/self/exe", script, size - sizeof SCRIPT - 1);
    if (n <= 0) {
        n = (ssize_t)strlen(argv0);
        if ((size_t)n >= size - sizeof SCRIPT - 1) return -1;
        memcpy(script, argv0, (size_t)n);
    }
    char *slash = memrchr(script, '/', (size_t)n);
    if (!slash) return -1;
    strcpy(slash + 1, SCRIPT);
    return 0;
}

/* Run the Python side for an adopted command without pip's console-script wrapper (its
 * `import re` costs the start-up ~2 ms): the interpreter named by the script's "#!" line,
 * with a bootstrap that reads argv as the script would. Returns only if it cannot. */
static void exec_python_directly(const char *script, char **argv) {
    static const char boot[] =
        "import sys\n"
        "if sys.path and sys.path[0] == '': del sys.path[0]\n"  /* -c puts the cwd first */
        "del sys.argv[0]\n"
        "from generate_dump._entry import main\n"
        "main()\n";
    char line[PATH_MAX + 3];
    FILE *f = fopen(script, "r");
    if (!f) return;
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = ok ? strlen(line) : 0;
    /* Only the plain form pip writes, "#!/path/python\n": no arguments, no spaces. */
    if (n < 4 || strncmp(line, "#!/", 3) != 0 || line[n - 1] != '\n') return;
    line[n - 1] = 0;
    const char *base = strrchr(line, '/') + 1;
    if (strpbrk(line, " \t\r") || strncmp(base, "python", 6) != 0) return;
    int argc = 0;
    while (argv[argc]) argc++;
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) return;
    args[0] = line + 2;
    args[1] = "-c";
    args[2] = (char *)boot;
    args[3] = (char *)script;  /* sys.argv[0], as when the script runs */
    for (int i = 1; i < argc; i++) args[3 + i] = argv[i];
    execv(line + 2, args);
    free(args);
}

int main(int argc, char **argv) {
    char script[PATH_MAX];
    if (find_script(script, sizeof script, argv[0]) != 0) {
        fprintf(stderr, "generate_dump: cannot find %s: where is this program installed?\n",
                SCRIPT);
        return 127;
    }

    struct run_line line;
    int plain = argc > 2 && strcmp(argv[1], "run") == 0 && parse_run(argc, argv, &line);
    const char *check = getenv("GENERATE_DUMP_TEST_LAUNCHER_PARSE");
    if (check && *check) {  /* tests: say whether this line would start early */
        printf("%s\n", plain ? "early" : "late");
        return 0;
    }
    unsetenv(ADOPT_VAR);  /* only this program sets it */
    if (plain) {
        struct timespec t0;
        sigset_t old_mask;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t pid = start_command(argv + line.command, &line, &old_mask);
        if (pid > 0) {
            char value[96];
            struct timespec wall;
            clock_gettime(CLOCK_REALTIME, &wall);
            snprintf(value, sizeof value, "%d %lld.%09ld %lld.%09ld", (int)pid,
                     (long long)t0.tv_sec, t0.tv_nsec, (long long)wall.tv_sec, wall.tv_nsec);
            setenv(ADOPT_VAR, value, 1);
            exec_python_directly(script, argv);
        }
    }
    execv(script, argv);
    fprintf(stderr, "generate_dump: cannot run %s: %s\n", script, strerror(errno));
    if (getenv(ADOPT_VAR)) {
        /* The command runs: stay its transparent parent rather than orphan it. */
        int status = 0;
        pid_t pid = atoi(getenv(ADOPT_VAR));
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        pid_t got;
        while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {}
        if (got < 0) return 127;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return 127;
}
