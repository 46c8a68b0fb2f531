"""Converting a multi-GiB core: generate_dump convert's peak memory against the core's
size and against gdb reading the same core.

    python3 bench/core_convert.py [--size-gib 4] [--touched-mb 256] [--rounds 1]

Builds a program that maps SIZE_GIB of anonymous memory, writes TOUCHED_MB of it (spread
over the whole range) and crashes with SIGSEGV. The kernel writes its core (sparse where
the memory is untouched) into a temporary directory (core_pattern must be a plain file
name such as "core", or we are root and set it for the moment of the crash and restore
it); without that, gdb's gcore of the stopped program makes the core instead.

Then, per round: `generate_dump convert --memory=full` (a minidump with every byte of the
core), `generate_dump convert` (default --memory=referenced) and, as the peer,
`gdb -batch -ex 'thread apply all bt'` on the same core. Prints a Markdown table: wall
time, output size, peak RSS (the kernel's ru_maxrss of each process) and peak RSS as a
fraction of the core's size.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import medians, run_timed  # noqa: E402

PROGRAM = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t size = strtoull(argv[1], NULL, 0), touched = strtoull(argv[2], NULL, 0);
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    size_t pages = touched / 4096, stride = pages ? (size / 4096) / pages : 0;
    for (size_t i = 0; i < pages; i++) memset(p + i * stride * 4096, (int)(i | 1), 4096);
    if (argc > 3) { printf("READY %d\n", (int)getpid()); fflush(stdout); pause(); }
    *(volatile int *)0 = 0;
    return 0;
}
"""


def _unlimited_core():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def make_core(work: str, size: int, touched: int) -> tuple[str, str, str]:
    """(core path, executable, how it was made)."""
    src = os.path.join(work, "big.c")
    exe = os.path.join(work, "big")
    with open(src, "w") as f:
        f.write(PROGRAM)
    subprocess.run(["gcc", "-O1", "-g", "-o", exe, src], check=True)
    pattern_file = "/proc/sys/kernel/core_pattern"
    with open(pattern_file) as f:
        pattern = f.read().strip()
    plain = not pattern.startswith("|") and "/" not in pattern
    can_set = os.geteuid() == 0 and os.access(pattern_file, os.W_OK)
    if plain or can_set:
        try:
            if not plain:
                with open(pattern_file, "w") as f:
                    f.write(os.path.join(work, "core"))
            subprocess.run([exe, str(size), str(touched)], cwd=work, preexec_fn=_unlimited_core,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            if not plain:
                with open(pattern_file, "w") as f:
                    f.write(pattern)
        cores = [n for n in os.listdir(work) if n.startswith("core")]
        if cores:
            return os.path.join(work, cores[0]), exe, "kernel"
    proc = subprocess.Popen([exe, str(size), str(touched), "wait"], stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        os.kill(proc.pid, signal.SIGSTOP)
        subprocess.run(["gcore", "-o", os.path.join(work, "gcore"), str(proc.pid)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return os.path.join(work, f"gcore.{proc.pid}"), exe, "gcore"


def run_one(cmd: list[str], out: str | None) -> dict:
    wall, usage = run_timed(cmd)
    size = 0
    if out and os.path.exists(out):
        size = os.path.getsize(out)
        os.unlink(out)
    return {"wall": wall, "rss": usage.ru_maxrss / 1024, "size": size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4)
    ap.add_argument("--touched-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="gd-corebench-")
    try:
        size = int(args.size_gib * (1 << 30))
        core, exe, how = make_core(work, size, args.touched_mb << 20)
        core_size = os.path.getsize(core)
        on_disk = os.stat(core).st_blocks * 512
        out = os.path.join(work, "out.dmp")
        tools = {
            "generate_dump convert --memory=full": [sys.executable, "-m", "generate_dump",
                                                    "convert", core, "-o", out,
                                                    "--memory=full"],
            "generate_dump convert (referenced)": [sys.executable, "-m", "generate_dump",
                                                   "convert", core, "-o", out],
        }
        if shutil.which("gdb"):
            tools["gdb thread apply all bt (peer)"] = ["gdb", "-batch", "-nx", "-ex",
                                                       "thread apply all bt", exe, core]
        results: dict[str, list[dict]] = {name: [] for name in tools}
        for _ in range(args.rounds):
            for name, cmd in tools.items():
                results[name].append(run_one(cmd, out))
        print(f"Core: {core_size / 2**30:.2f} GiB ({on_disk / 2**20:.0f} MiB on disk, made "
              f"by {how}), {args.touched_mb} MiB touched; medians of {args.rounds} round(s).\n")
        print("| tool | wall s | output MiB | peak RSS MiB | RSS / core size |")
        print("|---|---|---|---|---|")
        for name, runs in results.items():
            m = medians(runs)
            print(f"| {name} | {m['wall']:.1f} | {m['size'] / 2**20:.1f} | {m['rss']:.0f} | "
                  f"{m['rss'] * 2**20 / core_size:.4f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
