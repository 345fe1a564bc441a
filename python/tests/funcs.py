# SPDX-License-Identifier: MIT
"""Functions the tests run in coremap's worker processes (imported there by name)."""
import hashlib
import os
import signal
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def file_digest(path):
    with open(path, "rb") as f:
        data = f.read()
    return [path, len(data), hashlib.sha256(data).hexdigest()]


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"three is not allowed (got {x})")
    return x


def crash_on_two(x):
    if x == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x


def sleep_on_one(x):
    if x == 1:
        time.sleep(60)
    return x


def slow_with_pid(item):
    # Records which worker ran it, then takes a while: for the interrupt test.
    with open(os.path.join(item["dir"], f"pid-{os.getpid()}"), "w"):
        pass
    time.sleep(item["ms"] / 1000.0)
    return item["n"] * 3


def numpy_sum(n):
    import numpy
    return int(numpy.arange(n, dtype=numpy.int64).sum())


def returns_set(x):
    return {x}


def pid(_):
    return os.getpid()


def identity(x):
    return x
