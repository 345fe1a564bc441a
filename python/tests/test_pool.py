# SPDX-License-Identifier: MIT
"""coremap.Pool against multiprocessing.Pool and a serial oracle."""
import multiprocessing
import os
import time

import pytest

import coremap
from coremap import Pool

import funcs


def test_map_imap_starmap_match_multiprocessing():
    items = list(range(300))
    with multiprocessing.Pool(2) as mp:
        expected_map = mp.map(funcs.square, items)
        expected_star = mp.starmap(funcs.add, [(i, 2 * i) for i in items])
    with Pool(2) as pool:
        assert pool.map(funcs.square, items) == expected_map
        assert list(pool.imap(funcs.square, iter(items))) == expected_map
        assert sorted(pool.imap_unordered(funcs.square, items, chunksize=7)) == sorted(expected_map)
        assert pool.starmap(funcs.add, [(i, 2 * i) for i in items]) == expected_star
        assert pool.apply(funcs.add, (2, 3)) == 5
        assert pool.map_async(funcs.square, items).get(timeout=120) == expected_map


def test_default_workers_are_cores_and_serial_runs_here():
    pool = Pool()
    assert pool._processes == os.cpu_count()
    # serial=True calls the function in this process: lambdas work, exceptions keep their type.
    assert Pool(serial=True).map(lambda x: x + 1, [1, 2]) == [2, 3]
    with pytest.raises(ValueError):
        Pool(serial=True).map(funcs.fail_on_three, [3])
    pids = set(Pool(2).map(funcs.pid, range(20)))
    assert os.getpid() not in pids


def test_error_names_item_and_has_traceback():
    with pytest.raises(coremap.ItemError) as info:
        Pool(2).map(funcs.fail_on_three, range(6))
    assert info.value.index == 3
    assert "Traceback" in info.value.error
    assert "ValueError: three is not allowed (got 3)" in info.value.error
    # imap yields the results before the failure, then raises.
    got = []
    with pytest.raises(coremap.ItemError):
        for r in Pool(2).imap(funcs.fail_on_three, range(6)):
            got.append(r)
    assert got == [0, 1, 2]


def test_lambda_and_closure_are_refused_clearly():
    with pytest.raises(TypeError, match="lambda"):
        Pool(2).map(lambda x: x, [1])

    def inner(x):
        return x

    with pytest.raises(TypeError, match="inside functions"):
        Pool(2).map(inner, [1])


def test_crash_is_one_items_error():
    records = coremap.map(funcs.crash_on_two, range(5), threads=2)
    assert [r.ok for r in records] == [True, True, False, True, True]
    assert "SIGSEGV" in records[2].error
    assert [r.result for r in records if r.ok] == [0, 1, 3, 4]


def test_timeout_kills_only_that_item():
    records = coremap.map(funcs.sleep_on_one, range(4), threads=2, timeout=1)
    assert [r.ok for r in records] == [True, False, True, True]
    assert "timed out" in records[1].error


def test_numpy_in_workers():
    assert Pool(2).map(funcs.numpy_sum, [10, 1000]) == [sum(range(10)), sum(range(1000))]


def test_result_not_json_is_the_items_error():
    records = coremap.map(funcs.returns_set, [1], threads=1)
    assert not records[0].ok
    assert "set" in records[0].error and "not a JSON value" in records[0].error


def test_closed_pool_refuses():
    pool = Pool(2)
    pool.close()
    pool.join()
    with pytest.raises(ValueError):
        pool.map(funcs.square, [1])


def test_python_function_in_process():
    # isolate=False: the python plugin runs in this process, on this interpreter (one item at a
    # time under the GIL); results and errors are the same as in workers.
    records = coremap.map(funcs.square, range(50), isolate=False, threads=2)
    assert [r.result for r in records] == [funcs.square(x) for x in range(50)]
    failed = coremap.map(funcs.fail_on_three, range(5), isolate=False)
    assert [r.ok for r in failed] == [True, True, True, False, True]
    assert failed[3].error.startswith("item:3: Traceback")


def test_pool_item_not_json_is_a_type_error():
    with pytest.raises(TypeError, match=r"item 1: set"):
        Pool(2).map(funcs.square, [1, {2}])
    with pytest.raises(TypeError, match="initializer"):
        Pool(2, initializer=print)


def test_pool_keeps_its_workers_between_calls():
    with Pool(2) as pool:
        first = set(pool.map(funcs.pid, range(40)))
        second = set(pool.map(funcs.pid, range(40)))
        # Two workers at most over both calls (a fresh start would bring new processes); the second
        # worker may start only in the second call, when the first was done before it was needed.
        assert len(first | second) <= 2 and first & second
        first |= second
        # A call stopped part-way (imap's consumer raised) leaves the pool usable.
        with pytest.raises(coremap.ItemError):
            for _ in pool.imap(funcs.fail_on_three, range(100)):
                pass
        assert pool.map(funcs.fail_on_three, [1, 2]) == [1, 2]
        sessions = pool._sessions
    # Leaving the with block ends them.
    assert sessions._idle == {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and
                                              open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in first):
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in first)
