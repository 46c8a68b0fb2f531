"""bench/target.c's protocol in CPython, to measure what Python capture adds to the freeze.

    PYTHON bench/python_target.py N [HEAP_MB [STACK_KB [TICK_US]]]

N threads parked a few Python frames deep (alternately in time.sleep and a lock acquire),
a control thread answering ``reset``/``gap``/``quit`` on stdin like target.c, and the
main thread as the ticker: it sleeps TICK_US and keeps the longest gap between wakeups.
HEAP_MB and STACK_KB are accepted for the same command line and ignored.
"""

import os
import sys
import threading
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
tick = (int(sys.argv[4]) if len(sys.argv) > 4 else 1000) / 1e6
state = {"max_gap": 0, "ticks": 0, "long": 0, "at": 0}
ready = threading.Semaphore(0)


def park(i, depth=3):
    if depth:
        return park(i, depth - 1)
    if i % 2:
        lock = threading.Lock()
        lock.acquire()
        ready.release()
        lock.acquire()
    ready.release()
    while True:
        time.sleep(3600)


def control():
    for line in sys.stdin:
        if line.startswith("reset"):
            state["max_gap"] = state["long"] = 0
            print("ok", flush=True)
        elif line.startswith("gap"):
            t0 = state["ticks"]
            deadline = time.monotonic() + 2
            while state["ticks"] < t0 + 2 and time.monotonic() < deadline:
                time.sleep(0.0005)
            print(state["max_gap"] // 1000, state["ticks"], state["long"], state["at"] // 1000,
                  flush=True)
        elif line.startswith("quit"):
            os._exit(0)
        else:
            print("error unknown command", flush=True)
    os._exit(0)


for i in range(n):
    threading.Thread(target=park, args=(i,), daemon=True).start()
for _ in range(n):
    ready.acquire()
threading.Thread(target=control, daemon=True).start()
print("READY", os.getpid(), flush=True)
prev = time.monotonic_ns()
while True:
    time.sleep(tick)
    t = time.monotonic_ns()
    gap = t - prev
    if gap > state["max_gap"]:
        state["max_gap"], state["at"] = gap, prev
    if gap > 5_000_000:
        state["long"] += 1
    state["ticks"] += 1
    prev = t
