"""A CPython target for the runtime tests: sleeping threads, one busy, one blocked on a
queue. Prints "READY <pid>" once they run, then for each line read on stdin prints
"TICK <busy iterations> <SIGUSR1 received>"."""
import os
import queue
import signal
import sys
import threading
import time

spins = 0
usr1 = 0


def on_usr1(signum, frame):
    global usr1
    usr1 += 1


def sleeper(up):
    up.wait()
    while True:
        time.sleep(3600)


def busy(up):
    global spins
    up.wait()
    x = 1
    while True:
        for _ in range(10000):
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        spins += 1


def blocked(up, q):
    up.wait()
    q.get()


signal.signal(signal.SIGUSR1, on_usr1)
up = threading.Barrier(6)
q = queue.Queue()
for i in range(3):
    threading.Thread(target=sleeper, args=(up,), name=f"sleeper-{i}", daemon=True).start()
threading.Thread(target=busy, args=(up,), name="busy", daemon=True).start()
threading.Thread(target=blocked, args=(up, q), name="blocked", daemon=True).start()
up.wait()
time.sleep(0.2)
print("READY", os.getpid(), flush=True)
for line in sys.stdin:
    print("TICK", spins, usr1, flush=True)
