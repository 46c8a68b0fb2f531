"""A CPython target for the Python-stack tests: one thread per kind of wait.

Prints READY PID when every thread has reached its wait (the busy thread: its loop).
Threads: sleep, lock, socket read, C code (ctypes sleep), deep recursion, generator,
coroutine, and one spinning with the GIL.
"""

import asyncio
import ctypes
import os
import socket
import sys
import threading
import time

DEPTH = int(sys.argv[1]) if len(sys.argv) > 1 else 200
ready = threading.Semaphore(0)
KINDS = []


def kind(fn):
    KINDS.append(fn)
    return fn


def nap():
    ready.release()
    time.sleep(3600)


@kind
def sleeper():
    nap()


@kind
def locked():
    lock = threading.Lock()
    lock.acquire()
    ready.release()
    lock.acquire()


@kind
def reader():
    a, b = socket.socketpair()
    ready.release()
    a.recv(1)


@kind
def in_c():
    libc = ctypes.CDLL(None)
    ready.release()
    libc.sleep(3600)


def recurse(n):
    if n == 0:
        nap()
    recurse(n - 1)


@kind
def deep():
    recurse(DEPTH)


def gen():
    yield 1
    nap()
    yield 2


@kind
def generator():
    for _ in gen():
        pass


async def inner():
    nap()


async def outer():
    await inner()


@kind
def coroutine():
    asyncio.run(outer())


@kind
def busy():
    ready.release()
    x = 0
    while True:
        x += 1


for fn in KINDS:
    threading.Thread(target=fn, name=fn.__name__, daemon=True).start()
for _ in KINDS:
    ready.acquire()
time.sleep(0.3)
print("READY", os.getpid(), flush=True)
sys.stdin.readline()
