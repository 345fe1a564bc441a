# SPDX-License-Identifier: MIT
"""multiprocessing.Pool's API on coremap: each call is one coremap run of the bundled python
plugin in worker processes (docs/python.md has the differences)."""

import os

from . import ItemError, run


def _results(the_run, what):
    # Pool's imap: results in order, the first failed item raises.
    with the_run:
        for index, ok, value, _, _ in the_run._raw():
            if not ok:
                raise ItemError(index, value)
            yield value


def _all_results(the_run):
    # Pool's map: every result in order; the first failed item raises once the run is over.
    results = []
    failure = None
    with the_run:
        for index, ok, value, _, _ in the_run._raw():
            if ok:
                results.append(value)
            elif failure is None:
                failure = ItemError(index, value)
    if failure is not None:
        raise failure
    return results


class AsyncResult:
    """What map_async, starmap_async and apply_async return (multiprocessing's AsyncResult)."""

    def __init__(self, compute, callback=None, error_callback=None):
        import threading  # here: a worker importing the caller's script need not import it
        self._event = threading.Event()
        self._value = None
        self._error = None

        def body():
            try:
                self._value = compute()
            except BaseException as e:  # handed to get()
                self._error = e
                if error_callback is not None:
                    error_callback(e)
            else:
                if callback is not None:
                    callback(self._value)
            finally:
                self._event.set()

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout=None) -> None:
        self._event.wait(timeout)

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def get(self, timeout=None):
        if not self._event.wait(timeout):
            raise TimeoutError("coremap: the result is not ready")
        if self._error is not None:
            raise self._error
        return self._value


class _Sessions:
    """A Pool's engines, one per function and settings, each lent to one call at a time."""

    def __init__(self):
        import threading  # here: a worker importing the caller's script need not import it
        self._lock = threading.Lock()
        self._idle = {}

    def take(self, key, settings):
        from . import _coremap
        with self._lock:
            session = self._idle.pop(key, None)
        if session is None:
            session = _coremap.Session(settings)
        return key, session

    def give_back(self, key, session):
        with self._lock:
            if not self._closed and key not in self._idle:
                self._idle[key] = session

    _closed = False

    def close(self):
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        idle.clear()  # ends their workers


class Pool:
    """``multiprocessing.Pool`` on coremap: ``Pool(processes).map(func, iterable)`` runs ``func``
    in ``processes`` worker processes (default: every core), each embedding one Python
    interpreter, kept for the Pool's later calls of the same function until ``close()``. Items and results are JSON values (a tuple arrives as a list). Beyond Pool:
    ``serial=True`` calls ``func`` in this process, in order (for debuggers, print and pdb; what
    the seed's "[my_func(item) for item in my_data_list]" does), and ``timeout`` (seconds per
    item: its worker is killed and the item fails), ``retries`` and ``memory_limit`` apply to
    every call. A crash (segfault, os._exit) fails only its item. ``start_method``: see
    ``coremap.run``."""

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None, *,
                 serial=False, timeout=None, retries=0, memory_limit=None, start_method="fork"):
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None:
            raise TypeError("coremap.Pool: initializer is not supported: do per-process set-up at import time "
                            "of the function's module (each worker imports it once)")
        self._processes = processes or os.cpu_count() or 1
        self._serial = serial
        self._keywords = {"timeout": timeout, "retries": retries, "memory_limit": memory_limit,
                          "start_method": start_method}
        self._closed = False
        self._sessions = None

    def _check(self):
        if self._closed:
            raise ValueError("Pool not running")

    def _run(self, func, iterable, ordered=True, star=False):
        # The workers of a call stay up for the Pool's next call of the same function (until
        # close(), terminate() or the end of a with block).
        if self._sessions is None:
            self._sessions = _Sessions()
        return run(func, iterable, threads=self._processes, ordered=ordered, isolate=True, star=star,
                   _sessions=self._sessions, **self._keywords)

    def imap(self, func, iterable, chunksize=1):
        """Results in order, as they come; the first failed item raises ItemError."""
        self._check()
        if self._serial:
            return (func(item) for item in iterable)
        return _results(self._run(func, iterable), "imap")

    def imap_unordered(self, func, iterable, chunksize=1):
        """Results as items finish; the first failed item raises ItemError."""
        self._check()
        if self._serial:
            return (func(item) for item in iterable)
        return _results(self._run(func, iterable, ordered=False), "imap_unordered")

    def map(self, func, iterable, chunksize=None):
        """A list of ``func(item)`` for every item, in order; the first failed item raises
        ItemError (after the run, as Pool.map raises after its items)."""
        self._check()
        if self._serial:
            return [func(item) for item in iterable]
        return _all_results(self._run(func, iterable))

    def starmap(self, func, iterable, chunksize=None):
        """``func(*args)`` for every args in iterable (each a tuple or list), in order."""
        self._check()
        if self._serial:
            return [func(*args) for args in iterable]
        return _all_results(self._run(func, iterable, star=True))

    def apply(self, func, args=(), kwds=None):
        """``func(*args)`` in a worker."""
        if kwds:
            raise TypeError("coremap.Pool.apply: keyword arguments cannot be sent (items are JSON arrays)")
        return self.starmap(func, [list(args)])[0]

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        self._check()
        items = list(iterable)
        return AsyncResult(lambda: self.map(func, items), callback, error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None):
        self._check()
        items = list(iterable)
        return AsyncResult(lambda: self.starmap(func, items), callback, error_callback)

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        self._check()
        return AsyncResult(lambda: self.apply(func, args, kwds), callback, error_callback)

    def close(self):
        """No new calls; ends the workers kept between calls."""
        self._closed = True
        if self._sessions is not None:
            self._sessions.close()

    def terminate(self):
        self.close()

    def join(self):
        if not self._closed:
            raise ValueError("Pool is still running")

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.terminate()
