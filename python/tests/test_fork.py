# SPDX-License-Identifier: MIT
"""Workers forked from the caller (start_method="fork", the default): each check runs in a
fresh interpreter, single-threaded at its first run of a Python function as a script is."""
import json
import os
import subprocess
import sys

import coremap

FORKED = r'''
import json, os, signal, sys, time
import coremap
from coremap import Pool

def where(x):
    print(f"printed-by-item-{x}")  # block-buffered: flushed when the worker ends
    return [x, sys.argv[0], os.getppid()]

def crash_on_two(x):
    if x == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x * 10

def sleep_on_one(x):
    if x == 1:
        time.sleep(60)
    return x

def reads_pipe_end(_):
    return sorted(os.listdir("/proc/self/fd"))

if __name__ == "__main__":
    out = {}
    # Buffered in this process when the fork server is made: printed once, not once per worker.
    sys.stdout.write("buffered-once ")
    read_end, write_end = os.pipe()          # held by this process only
    out["server"] = coremap._coremap.fork_server_pid()
    with Pool(2) as pool:
        out["where"] = pool.map(where, range(4))
        out["crash"] = [(r.index, r.ok, r.result, r.error) for r in coremap.run(crash_on_two, range(5), threads=2)]
        started = time.monotonic()
        out["timeout"] = [(r.index, r.ok, r.error) for r in coremap.run(sleep_on_one, range(3), threads=2, timeout=1)]
        out["timeout_s"] = time.monotonic() - started
        out["fds"] = pool.map(reads_pipe_end, [0])[0]
    os.close(write_end)
    out["pipe_end_seen"] = os.read(read_end, 1) == b""  # no other process holds the write end
    out["spawn"] = Pool(2, start_method="spawn").map(where, [7])
    out["spawn_fds"] = Pool(1, start_method="spawn").map(reads_pipe_end, [0])[0]
    out["pid"] = os.getpid()
    print(json.dumps(out))
'''


def run_script(tmp_path, text):
    script = tmp_path / "forked.py"
    script.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(coremap.__file__))))
    done = subprocess.run([sys.executable, str(script), os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run_script.stderr = done.stderr
    return script, done.stdout


def test_forked_workers_keep_isolation_timeouts_and_no_descriptor(tmp_path):
    script, stdout = run_script(tmp_path, FORKED)
    assert stdout.count("buffered-once") == 1
    out = json.loads(stdout.split("buffered-once ", 1)[1])
    assert out["server"] > 0
    # Forked: the caller's own __main__ (its sys.argv), a child of the caller as any worker.
    assert out["where"] == [[i, str(script), out["pid"]] for i in range(4)]
    # What an item prints goes to standard error (the channel has standard output), once.
    assert all(run_script.stderr.count(f"printed-by-item-{i}") == 1 for i in range(4)), run_script.stderr
    # A segfault in a forked worker costs its item only.
    crash = {index: (ok, result, error) for index, ok, result, error in out["crash"]}
    assert sorted(crash) == [0, 1, 2, 3, 4]
    assert crash[2][0] is False and "SIGSEGV" in crash[2][2]
    assert all(crash[i][:2] == (True, i * 10) for i in (0, 1, 3, 4))
    # The item over its time limit is killed; the others are not.
    timeout = {index: (ok, error) for index, ok, error in out["timeout"]}
    assert timeout[1][0] is False and "timed out" in timeout[1][1]
    assert timeout[0] == (True, None) and timeout[2] == (True, None)
    assert out["timeout_s"] < 30
    # The worker has the descriptors an exec'ed coremap-worker has, nothing of the caller's.
    assert out["fds"] == out["spawn_fds"]
    assert out["pipe_end_seen"]
    # start_method="spawn": coremap-worker's interpreter imports the script instead.
    assert out["spawn"] == [[7, "coremap-python", out["pid"]]]


def test_fork_server_ends_with_its_caller(tmp_path):
    _, stdout = run_script(tmp_path, "import coremap\nprint(coremap._coremap.fork_server_pid())\n")
    server = int(stdout)
    assert server > 0
    # The caller has exited and its end of the socket is closed: the server exits at once (it
    # was the caller's child, reaped by init, so /proc/<pid> goes away or is a zombie).
    import time
    deadline = time.monotonic() + 30
    def alive():
        try:
            with open(f"/proc/{server}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive()


THREADED = r'''
import json, sys, threading
import coremap

def where(x):
    return [x, sys.argv[0]]

if __name__ == "__main__":
    release = threading.Event()
    waiter = threading.Thread(target=release.wait)
    waiter.start()                            # another thread before the first run: no fork
    out = {"server": coremap._coremap.fork_server_pid(), "where": coremap.Pool(2).map(where, range(3))}
    release.set()
    waiter.join()
    print(json.dumps(out))
'''

LIMITED = r'''
import json, sys
import coremap

def where(x):
    return [x, sys.argv[0]]

if __name__ == "__main__":
    print(json.dumps({"server": coremap._coremap.fork_server_pid(),
                      "where": coremap.Pool(1, memory_limit="4G").map(where, range(2))}))
'''


def test_a_threaded_caller_and_memory_limit_start_coremap_worker(tmp_path):
    # Forking a process with other threads would copy their locks as they are: coremap-worker
    # is started instead, with the same results. So with memory_limit (RLIMIT_AS would count
    # the copy of the caller).
    _, stdout = run_script(tmp_path, THREADED)
    assert json.loads(stdout) == {"server": 0, "where": [[i, "coremap-python"] for i in range(3)]}
    _, stdout = run_script(tmp_path, LIMITED)
    out = json.loads(stdout)
    assert out["server"] > 0 and out["where"] == [[i, "coremap-python"] for i in range(2)]


SERVER_KILLED = r'''
import json, os, signal, sys, time
import coremap

def where(x):
    return [x, sys.argv[0]]

if __name__ == "__main__":
    server = coremap._coremap.fork_server_pid()
    first = coremap.Pool(2).map(where, range(2))
    os.kill(server, signal.SIGKILL)
    os.waitpid(server, 0)
    # The next workers cannot be forked: coremap-worker is started instead, results the same.
    print(json.dumps({"first": first, "after": coremap.Pool(2).map(where, range(3))}))
'''


def test_a_killed_fork_server_falls_back_to_coremap_worker(tmp_path):
    script, stdout = run_script(tmp_path, SERVER_KILLED)
    out = json.loads(stdout)
    assert out["first"] == [[i, str(script)] for i in range(2)]
    assert out["after"] == [[i, "coremap-python"] for i in range(3)]
