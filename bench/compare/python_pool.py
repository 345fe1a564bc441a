#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""coremap's Python package against multiprocessing.Pool, in one run, alternating, medians of
ROUNDS rounds, as ratios (docs/performance.md#python-against-multiprocessingpool):

  (a) SHA-256 of 2,000 generated files with hashlib: Pool(N).map, coremap.Pool(N).map, and
      coremap.map("sha256") (the C++ plugin in process, GIL released);
  (b) a tiny function over 100,000 items: Pool.map (default chunksize), Pool.imap (chunksize 1),
      coremap.Pool.map;
  (c) a pure-Python CPU-bound function of about 1 ms per item, 2,000 items: Pool.map,
      coremap.Pool.map;
  start-up: Pool(N) and coremap.Pool(N) mapping one item, and a later call on the same pool;
  (d) coremap.run of (c) with output=FILE in a child process, killed (SIGKILL) once half the
      records are in FILE.part, then resume=True: the resumed part's time and the total against
      an uninterrupted run (Pool has no counterpart: a killed Pool.map loses everything).

Every tool's results are checked against a serial computation before anything is timed.
Usage: PYTHONPATH=build/python python3 bench/compare/python_pool.py [ROUNDS] [WORKERS]
"""

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import coremap


def hash_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tiny(x):
    return x + 1


def cpu_1ms(n):
    # About 1 ms of pure-Python arithmetic on the reference machine.
    total = 0
    for i in range(n, n + 20000):
        total = (total + i * i) % 1000003
    return total


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def alternate(rounds, cases):
    """cases: name -> callable; returns name -> median seconds."""
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, function in cases.items():
            times[name].append(timed(function)[0])
    return {name: statistics.median(t) for name, t in times.items()}


def table(title, medians, reference):
    print(f"\n{title}")
    print(f"{'tool':52s} {'median s':>9s} {'vs ' + reference:>22s}")
    for name, seconds in medians.items():
        print(f"{name:52s} {seconds:9.3f} {seconds / medians[reference]:22.2f}")


KILLED_RUN = r'''
import sys
sys.path.insert(0, sys.argv[1])
import coremap
from python_pool import cpu_1ms
n = int(sys.argv[3])
resume = sys.argv[4] == "resume"
for _ in coremap.run(cpu_1ms, range(n), threads=int(sys.argv[5]), output=sys.argv[2], resume=resume):
    pass
'''


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
    work = tempfile.mkdtemp(prefix="coremap-python-bench-")
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
        print(f"machine: {model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
        print(f"python {platform.python_version()}, coremap {coremap.version()}, {workers} workers, {rounds} rounds, "
              f"load average at start {os.getloadavg()[0]:.2f}")

        # (a) files
        paths = []
        for i in range(2000):
            path = os.path.join(work, f"f{i:04d}.bin")
            with open(path, "wb") as f:
                f.write(os.urandom(1000 + (i * 7919) % 60000))
            paths.append(path)
        expected = [hash_file(p) for p in paths]
        with multiprocessing.Pool(workers) as pool:
            assert pool.map(hash_file, paths) == expected
        assert coremap.Pool(workers).map(hash_file, paths) == expected
        assert [r.result["sha256"] for r in coremap.map("sha256", paths, threads=workers)] == expected

        def mp_hash():
            with multiprocessing.Pool(workers) as pool:
                return pool.map(hash_file, paths)

        a = alternate(rounds, {
            "multiprocessing Pool.map, hashlib": mp_hash,
            "coremap.Pool.map, hashlib": lambda: coremap.Pool(workers).map(hash_file, paths),
            "coremap.map('sha256') (C++ plugin in process)": lambda: coremap.map("sha256", paths, threads=workers),
        })
        total_bytes = sum(os.path.getsize(p) for p in paths)
        table(f"(a) SHA-256 of 2,000 files ({total_bytes} bytes), each tool's pool started in the timing",
              a, "multiprocessing Pool.map, hashlib")

        # (b) tiny function
        items = list(range(100_000))
        expected = [tiny(x) for x in items]

        def mp_map():
            with multiprocessing.Pool(workers) as pool:
                return pool.map(tiny, items)

        def mp_imap():
            with multiprocessing.Pool(workers) as pool:
                return list(pool.imap(tiny, items, chunksize=1))

        assert mp_map() == expected and mp_imap() == expected
        assert coremap.Pool(workers).map(tiny, items) == expected
        b = alternate(rounds, {
            "multiprocessing Pool.map (default chunksize)": mp_map,
            "multiprocessing Pool.imap (chunksize 1)": mp_imap,
            "coremap.Pool.map": lambda: coremap.Pool(workers).map(tiny, items),
        })
        table("(b) x + 1 over 100,000 items", b, "coremap.Pool.map")

        # (c) CPU-bound
        items = list(range(2000))
        started = time.perf_counter()
        expected = [cpu_1ms(x) for x in items]
        serial = time.perf_counter() - started

        def mp_cpu():
            with multiprocessing.Pool(workers) as pool:
                return pool.map(cpu_1ms, items)

        assert mp_cpu() == expected
        assert coremap.Pool(workers).map(cpu_1ms, items) == expected
        c = alternate(rounds, {
            "multiprocessing Pool.map": mp_cpu,
            "coremap.Pool.map": lambda: coremap.Pool(workers).map(cpu_1ms, items),
        })
        table(f"(c) pure-Python CPU function, 2,000 items of {1000 * serial / len(items):.2f} ms "
              f"(serial {serial:.3f} s)", c, "multiprocessing Pool.map")

        # start-up
        def mp_one():
            with multiprocessing.Pool(workers) as pool:
                return pool.map(tiny, [1])

        s = alternate(max(rounds, 5), {
            "multiprocessing Pool(N).map of one item": mp_one,
            "coremap.Pool(N).map of one item": lambda: coremap.Pool(workers).map(tiny, [1]),
        })
        table("start-up: a pool of N workers, one item", s, "multiprocessing Pool(N).map of one item")

        # a pool's later calls: coremap.Pool keeps a function's workers between its calls
        with multiprocessing.Pool(workers) as mp_pool:
            cm_pool = coremap.Pool(workers)
            mp_pool.map(tiny, [1, 2])
            cm_pool.map(tiny, [1, 2])
            later = alternate(max(rounds, 5), {
                "multiprocessing pool.map of one item, a later call": lambda: mp_pool.map(tiny, [1]),
                "coremap pool.map of one item, a later call": lambda: cm_pool.map(tiny, [1]),
            })
            cm_pool.close()
        table("a later call on the same pool, one item", later, "multiprocessing pool.map of one item, a later call")

        # (d) killed at 50 % and resumed
        n = len(items)
        here = os.path.dirname(os.path.abspath(__file__))
        script = os.path.join(work, "killed_run.py")
        with open(script, "w") as f:
            f.write(KILLED_RUN)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(coremap.__file__)),
                                                           os.environ.get("PYTHONPATH", "")]))

        def child(out, mode):
            return [sys.executable, script, here, out, str(n), mode, str(workers)]

        whole_out = os.path.join(work, "whole.jsonl")
        whole, _ = timed(lambda: subprocess.run(child(whole_out, "fresh"), env=env, check=True))
        out = os.path.join(work, "killed.jsonl")
        started = time.perf_counter()
        proc = subprocess.Popen(child(out, "fresh"), env=env)
        part = out + ".part"
        while True:
            if os.path.exists(part):
                with open(part, "rb") as f:
                    if f.read().count(b"\n") >= n // 2:
                        break
            if proc.poll() is not None:
                raise SystemExit("the run ended before it was killed")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before_kill = time.perf_counter() - started
        with open(part, "rb") as f:
            kept = f.read().count(b"\n")
        resumed, _ = timed(lambda: subprocess.run(child(out, "resume"), env=env, check=True))
        with open(out) as f:
            records = [json.loads(line) for line in f]
        assert [r["index"] for r in records] == list(range(n))
        assert [r["result"] for r in records] == expected
        with open(whole_out, "rb") as f, open(out, "rb") as g:
            assert f.read() == g.read()
        print(f"\n(d) (c) through coremap.run(output=FILE) in a child process, SIGKILL at 50 %, then resume=True")
        print(f"uninterrupted run                 {whole:8.3f} s")
        print(f"killed after                      {before_kill:8.3f} s with {kept} of {n} records kept in FILE.part")
        print(f"resume=True                       {resumed:8.3f} s for the other {n - kept}; "
              f"killed + resumed = {(before_kill + resumed) / whole:.2f} x the uninterrupted run; FILE identical")
        print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
