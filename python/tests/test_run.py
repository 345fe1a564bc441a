# SPDX-License-Identifier: MIT
"""coremap.run / coremap.map: C++ plugins in process, streaming, stops, output and resume."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import coremap

import funcs


def make_files(directory, count):
    paths = []
    for i in range(count):
        p = directory / f"file{i:04d}.bin"
        p.write_bytes(os.urandom(100 + i * 37))
        paths.append(str(p))
    return paths


def test_sha256_in_process_equals_hashlib(tmp_path):
    paths = make_files(tmp_path, 50)
    paths.append(str(tmp_path / "missing"))
    records = coremap.map("sha256", paths)
    assert [r.index for r in records] == list(range(51))
    for r, p in zip(records[:-1], paths):
        with open(p, "rb") as f:
            data = f.read()
        assert r.ok and r.result == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert not records[-1].ok and "missing" in records[-1].error and "No such file" in records[-1].error


def test_plugin_runs_with_the_gil_released():
    # A Python thread counts while the spin plugin runs: it could not, were the GIL held.
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        records = coremap.map("spin", [{"us": 20000}] * 20, threads=2)
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in records)
    assert counter[0] > 1000


def test_non_json_item_is_a_type_error_naming_its_index():
    with pytest.raises(TypeError, match=r"item 2: set at / is not a JSON value"):
        coremap.map("echo", [1, {"a": 1}, {1, 2}])
    with pytest.raises(TypeError, match=r"item 1: float nan at /x"):
        coremap.map("echo", [0, {"x": float("nan")}])
    with pytest.raises(TypeError, match=r"item 0: dict at / has a key of type int"):
        coremap.map("echo", [{1: 2}])


def test_items_and_results_round_trip_as_json():
    items = [None, True, 1, -2**63, 2**64 - 1, 1.5, "x", [1, [2]], {"a": {"b": [None]}}, (1, "two")]
    records = coremap.map("echo", items)
    # Python's json module is the oracle for what a JSON round trip gives (a tuple becomes a list).
    assert [r.result for r in records[:6]] == json.loads(json.dumps(items[:6]))
    assert [r.result for r in records[7:]] == json.loads(json.dumps(items[7:]))
    assert records[6].result == {"path": "x"}  # a str item of a plugin run is a path


def test_records_stream_while_the_generator_is_read():
    consumed = [0]
    seen_early = []

    def items():
        for i in range(200000):
            consumed[0] = i
            yield i

    for record in coremap.run("echo", items()):
        if record.index == 0:
            seen_early.append(consumed[0])
        last = record
    assert last.index == 199999
    assert seen_early and seen_early[0] < 199999  # the first record came before the last item was read


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_million_items_stream_with_flat_memory():
    def items():
        for i in range(1_000_000):
            yield {"n": i, "pad": "x" * 40}

    count = 0
    at_100k = None
    for record in coremap.run("echo", items()):
        assert record.ok
        count += 1
        if count == 100_000:
            at_100k = rss_kib()
    growth = rss_kib() - at_100k
    assert count == 1_000_000
    # 900,000 more items (each ~60 bytes of JSON, ~54 MB in all) leave memory within 30 MB.
    assert growth < 30 * 1024, f"RSS grew {growth} KiB"


def test_unordered_and_max_errors():
    records = list(coremap.run("echo", range(1000), ordered=False, threads=2))
    assert sorted(r.index for r in records) == list(range(1000))
    run = coremap.run("fault", [{"fault": "throw"}] * 50, max_errors=1, threads=1)
    records = list(run)
    assert run.stats["stopped"] == "max_errors"
    assert len(records) < 50


def test_progress_callback():
    snapshots = []
    records = coremap.map("sleep", [{"ms": 30}] * 20, threads=2, progress=snapshots.append)
    assert len(records) == 20
    assert snapshots and snapshots[-1]["done"] == 20


def test_setup_errors_raise_coremap_errors(tmp_path):
    with pytest.raises(coremap.PluginError, match="no_such_plugin"):
        coremap.map("no_such_plugin", [1])
    with pytest.raises(coremap.ConfigError, match="unknown"):
        coremap.map("echo", [1], config={"unknown": 1})
    with pytest.raises(coremap.ManifestError):
        coremap.map("echo", manifest=str(tmp_path / "none.jsonl"))
    with pytest.raises(coremap.UsageError, match="resume"):
        coremap.map("echo", [1], resume=True)


def test_manifest_file(tmp_path):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(10)))
    assert [r.result for r in coremap.map("echo", manifest=manifest)] == [{"n": i} for i in range(10)]


def test_output_stop_and_resume(tmp_path):
    out = tmp_path / "out.jsonl"
    items = [{"n": i, "ms": 5} for i in range(200)]
    run = coremap.run("sleep", items, output=out, threads=2)
    for record in run:
        if record.index == 20:
            break
    run.stop()
    assert not out.exists() and (tmp_path / "out.jsonl.part").exists()
    assert not run.stats["finished"]
    records = coremap.map("sleep", items, output=out, resume=True, threads=2)
    assert [r.index for r in records] == list(range(200))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(200))
    assert all(r["ok"] and r["result"] == {"ms": 5} for r in lines)
    # Other items than the journal's are refused.
    with pytest.raises(coremap.ResumeError):
        coremap.map("sleep", items[:10], output=out, resume=True)


INTERRUPTED = r'''
import json, os, sys
import coremap
sys.path.insert(0, sys.argv[3])
import funcs
items = [{"n": i, "ms": 200, "dir": sys.argv[2]} for i in range(40)]
resume = len(sys.argv) > 4
done = 0
for record in coremap.run(funcs.slow_with_pid, items, threads=2, output=sys.argv[1], resume=resume):
    done += 1
    if done == 3 and not resume:
        print("ready", flush=True)
print("finished", flush=True)
'''


def test_keyboard_interrupt_stops_workers_and_resume_finishes(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    out = tmp_path / "out.jsonl"
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(coremap.__file__))))
    here = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen([sys.executable, str(script), str(out), str(pids), here], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert "KeyboardInterrupt" in err
    assert child.returncode != 0
    assert (tmp_path / "out.jsonl.part").exists() and not out.exists()
    # Every worker that ran an item has ended (polled: they are reaped by the time the run returns).
    worker_pids = [int(p.name.split("-")[1]) for p in pids.iterdir()]
    assert worker_pids
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in worker_pids):
        time.sleep(0.05)
    alive = [p for p in worker_pids if os.path.exists(f"/proc/{p}") and
             open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"workers still running: {alive}"
    partial = len((tmp_path / "out.jsonl.part").read_text().splitlines())
    assert 3 <= partial < 40
    resumed = subprocess.run([sys.executable, str(script), str(out), str(pids), here, "resume"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(40))
    assert [r["result"] for r in lines] == [i * 3 for i in range(40)]


def test_leaving_the_loop_stops_the_run():
    run = coremap.run("sleep", [{"ms": 20}] * 500, threads=2)
    for record in run:
        if record.index == 5:
            break
    # The loop's generator was closed: the run stopped, long before its 500 items (5 s of sleeps).
    assert run.stats is not None and run.stats["stopped"] == "cancelled"
    assert run.stats["items"] < 500


POOL_INTERRUPTED = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from coremap import Pool
import funcs
print("start", flush=True)
try:
    Pool(2).map(funcs.slow_with_pid, [{"n": i, "ms": 60000, "dir": sys.argv[2]} for i in range(4)])
except KeyboardInterrupt:
    print("interrupted", flush=True)
'''


def test_ctrl_c_to_the_process_group_interrupts_pool_map(tmp_path):
    # Ctrl-C on a terminal signals the whole foreground process group, workers included: the
    # caller gets KeyboardInterrupt once the run has stopped (items running in workers get the
    # 2 s stop grace, then their workers are killed), not after the items' 60 s.
    script = tmp_path / "pool_interrupted.py"
    script.write_text(POOL_INTERRUPTED)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(coremap.__file__))))
    child = subprocess.Popen([sys.executable, str(script), os.path.dirname(os.path.abspath(__file__)), str(pids)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    assert child.stdout.readline().strip() == "start"
    deadline = time.monotonic() + 60
    while not any(pids.iterdir()) and time.monotonic() < deadline:  # a worker is running an item
        time.sleep(0.02)
    assert any(pids.iterdir())
    started = time.monotonic()
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert out.strip() == "interrupted", err
    assert time.monotonic() - started < 30


TRICKY = ["", "quote \" backslash \\ slash /", "\x00\x01\x1f\x7f tab\t nl\n cr\r bs\b ff\f", "é ü 中文 𝄞 😀",
          "\u2028\u2029", 0, -1, 2**63 - 1, -2**63, 2**64 - 1, 0.1, -0.0, 1e300, 5e-324, 1.0, 123456789.125,
          [], {}, [[[]]], {"b": 1, "a": [1, {"z": None, "y": True, "é": False}], "": "empty"}, ("t", 1)]


def test_items_and_results_as_text_match_python_json():
    # Items are written as JSON text and records read back straight to Python objects (not
    # through nlohmann values): Python's json module is the oracle for both directions.
    for item in TRICKY:
        text = coremap._coremap.item_json(item, False)
        assert json.loads(text) == json.loads(json.dumps(item)), item
        if not isinstance(item, float):
            # Keys in byte order (nlohmann's objects), no spaces, characters as they are.
            expected = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert text.decode() == expected.replace("\\u007f", "\x7f"), item
    records = coremap.map(funcs.identity, TRICKY, threads=2)
    assert [r.result for r in records] == json.loads(json.dumps(TRICKY))
    assert all(type(r.result) is type(json.loads(json.dumps(i))) for r, i in zip(records, TRICKY))
    assert str(records[11].result) == "-0.0" and records[13].result == 5e-324
