"""A CPython target for tests/test_jit.py (3.12+, run with -X perf): three threads call
Python functions in a loop and sleep. Prints "READY <pid>" once they run."""
import os
import threading
import time


def leaf_sleep():
    time.sleep(0.002)


def busy(n):
    s = 0
    for i in range(n):
        s += i ^ (s >> 3)
    return s


def worker_loop():
    while True:
        busy(2000)
        leaf_sleep()


for i in range(2):
    threading.Thread(target=worker_loop, name=f"py-{i}", daemon=True).start()
time.sleep(0.3)
print("READY", os.getpid(), flush=True)
worker_loop()
