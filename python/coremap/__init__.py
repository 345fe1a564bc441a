# SPDX-License-Identifier: MIT
"""coremap for Python: map a C++ plugin or a Python function over items on every core.

    import coremap
    for record in coremap.run("sha256", ["a.txt", "b.txt"]):   # streamed while the run goes on
        print(record.index, record.ok, record.result or record.error)

    from coremap import Pool                                  # multiprocessing.Pool's API
    with Pool(4) as pool:
        results = pool.map(f, items)

docs/python.md has the whole API and the differences from multiprocessing.Pool.
"""

import collections
import os
import sys
import time

from ._coremap import (  # noqa: F401  (re-exported)
    ConfigError,
    Error,
    ManifestError,
    OutputError,
    PluginError,
    ResumeError,
    UsageError,
)
from . import _coremap

__all__ = [
    "Record", "Run", "run", "imap", "map", "Pool", "ItemError", "function_spec", "Error", "UsageError",
    "ConfigError", "PluginError", "ManifestError", "OutputError", "ResumeError", "version",
]


def version() -> str:
    """The version of the libcoremap this module runs on."""
    return _coremap.version()


# A namedtuple rather than typing.NamedTuple: importing typing costs every worker that imports
# the caller's script (and so coremap) milliseconds of start-up.
Record = collections.namedtuple("Record", "index ok result error attempts sub", defaults=(None, None, 1, None))
Record.__doc__ = """The outcome of one item, as coremap writes it: ``index`` (0-based position among the
items), ``ok``, ``result`` (when ok) or ``error`` (the message: a Python function's traceback,
``crashed: SIGSEGV``, ``timed out ...``), ``attempts`` (calls it took with ``retries``) and
``sub`` (the position among an item's records when a plugin fans out, else None)."""


class ItemError(Exception):
    """An item failed where the Pool API raises (``Pool.map``, ``imap``, ...): ``index`` is
    the item's position, ``error`` the message (with a Python function's traceback)."""

    def __init__(self, index: int, error: str):
        super().__init__(f"item {index}: {error}")
        self.index = index
        self.error = error


class _MainImportStopped(BaseException):
    """Raised in a worker importing the caller's main script when the script reaches its first
    coremap run: the functions above it are defined, and the script's run is the parent's."""


def _refuse_in_main_import() -> None:
    # The python plugin sets this while it imports the parent's main script as __mp_main__ in a
    # worker: a script without `if __name__ == "__main__":` would otherwise start a run of its
    # own in every worker.
    if getattr(sys, "_coremap_importing_main", False):
        sys._coremap_main_stopped = True
        raise _MainImportStopped("coremap: the main script's own run is not repeated in a worker")


def function_spec(function) -> str:
    """How a worker finds ``function``: ``"module:qualname"``, or ``"/path/script.py:qualname"``
    for a function of the caller's ``__main__`` script (which a forked worker has already and
    a spawned one imports under the name ``__mp_main__``, as multiprocessing's spawn start
    method does). Functions are sent by
    reference, as pickle sends them, so lambdas, closures and functions defined inside other
    functions raise TypeError."""
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    module = getattr(function, "__module__", None)
    if module is None and hasattr(function, "__objclass__"):  # a method of a builtin type: str.upper
        module = function.__objclass__.__module__
    if not callable(function) or name is None or module is None:
        raise TypeError(f"coremap: {function!r} cannot be sent to worker processes: give a function defined "
                        "with def at the top level of a module (or a builtin)")
    if "<lambda>" in name or "<locals>" in name:
        raise TypeError(f"coremap: {name} cannot be sent to worker processes: lambdas, closures and functions "
                        "defined inside functions have no importable name (multiprocessing.Pool cannot pickle "
                        "them either); define it with def at the top level of a module, or use serial=True")
    if module in ("__main__", "__mp_main__"):
        main = sys.modules.get(module)
        path = getattr(main, "__file__", None)
        if not path:
            raise TypeError(f"coremap: {name} is defined in an interactive session (__main__ has no file), "
                            "which worker processes cannot import: put it in a module or a script file, or "
                            "use serial=True")
        return f"{os.path.abspath(path)}:{name}"
    return f"{module}:{name}"


def _worker_sys_path() -> list:
    # The caller's sys.path, so workers import what the caller imports ('' is the directory the
    # caller runs in).
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path if isinstance(p, str)]


def _terminal_progress(snapshot, total):
    done, seconds = snapshot["done"], snapshot["seconds"]
    rate = done / seconds if seconds > 0 else 0.0
    if total:
        left = (total - done) / rate if rate > 0 else 0.0
        line = f"{done}/{total} ({100.0 * done / total:.1f} %) {rate:.0f} items/s ETA {left:.0f} s"
    else:
        line = f"{done} items {rate:.0f} items/s"
    if snapshot["failed"]:
        line += f", {snapshot['failed']} failed"
    sys.stderr.write("\r\x1b[2Kcoremap: " + line)
    sys.stderr.flush()


class Run:
    """A run in progress: iterate it (once) for its records (in index order unless
    ``ordered=False``), streamed as items finish; the items are read from their iterable as the
    run goes, so memory stays flat however many there are. ``stats`` (a dict: items, ok, failed,
    not_run, wall_seconds, threads, stopped, resumed, ...) is filled once the last record was
    taken. ``stop()``, leaving a ``with`` block, leaving the loop early (``break``, an exception)
    or Ctrl-C while iterating stops the run: no new item starts, items done so far keep their
    records (with ``output``, in FILE.part for ``resume=True``).
    """

    def __init__(self, settings, items, progress, total, session=None):
        self._run = _coremap.Run(settings, items, session)
        self._progress = progress
        self._total = total
        self._done = False
        self._release = None
        self._last_progress = 0.0
        self.stats = None
        self.output = settings.output or None

    def __iter__(self):
        return self._records()

    def _report(self, final: bool) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not final and now - self._last_progress < 0.2:
            return
        self._last_progress = now
        snapshot = self._run.progress()
        if final and self.stats is not None:
            snapshot["done"] = self.stats["records"]
            snapshot["failed"] = self.stats["failed"]
        if self._progress is True:
            _terminal_progress(snapshot, self._total)
            if final:
                sys.stderr.write("\n")
        else:
            self._progress(snapshot)

    def _records(self):
        for fields in self._raw():
            yield Record(fields[0], fields[1], fields[2] if fields[1] else None,
                         None if fields[1] else fields[2], fields[3], fields[4])

    def _raw(self):
        # (index, ok, result or error, attempts, sub) tuples, as the engine hands them over.
        # Leaving the loop early (break, an exception such as KeyboardInterrupt in its body)
        # closes this generator, which stops the run.
        try:
            while not self._done:
                try:
                    batch, closed = self._run.next(4096, 0.2)
                except BaseException:
                    self._done = True
                    self.stats = self._run.stats()
                    raise
                yield from batch
                if closed:
                    self._done = True
                    self.stats = self._run.stats()
                    self._report(True)
                else:
                    self._report(False)
        finally:
            if not self._done:
                self.stop()
            self._give_back()

    def _give_back(self):
        release, self._release = self._release, None
        if release is not None:
            release()

    def stop(self) -> None:
        """Stops the run and waits for it: no new item starts; records of items done are kept."""
        self._run.stop()
        if self.stats is None:
            self.stats = self._run.stats()
        self._done = True
        self._give_back()

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _settings(plugin, *, config, star, start_method, threads, serial, ordered, isolate, timeout, retries, max_errors,
              memory_limit, output, resume, restart, retry_failed, plugin_path, max_in_flight, fmt):
    import json
    settings = _coremap.Settings()
    if isinstance(plugin, (str, os.PathLike)):
        settings.plugin = os.fspath(plugin)
        settings.str_paths = True
        settings.isolate = bool(isolate)
        if star:
            raise TypeError("coremap: star applies to Python functions")
    elif callable(plugin):
        function_config = {"function": function_spec(plugin), "sys_path": _worker_sys_path()}
        if star:
            function_config["star"] = True
        if config:
            raise TypeError("coremap: config applies to plugins, not to Python functions")
        config = function_config
        settings.plugin = "python"
        # One interpreter runs one item at a time (the GIL): N workers, each with its own, run N.
        settings.isolate = True if isolate is None else bool(isolate)
        if start_method not in ("fork", "spawn"):
            raise ValueError(f"coremap: start_method must be 'fork' or 'spawn', not {start_method!r}")
        # memory_limit bounds a worker's address space, which a forked worker shares with a copy
        # of this process: its workers are started fresh.
        settings.fork = start_method == "fork" and not memory_limit
    else:
        raise TypeError(f"coremap: plugin must be a plugin name, a path to a plugin .so or a function, "
                        f"not {type(plugin).__name__}")
    if config is not None:
        if not isinstance(config, dict):
            raise TypeError("coremap: config must be a dict (the plugin's JSON config)")
        settings.config = json.dumps(config, allow_nan=False)
    if threads is not None:
        if threads < 1:
            raise ValueError("coremap: threads must be at least 1")
        settings.threads = int(threads)
    settings.serial = bool(serial)
    settings.ordered = bool(ordered)
    settings.timeout = float(timeout or 0)
    settings.retries = int(retries)
    settings.max_errors = int(max_errors)
    settings.memory_limit = str(memory_limit or "")
    settings.output = os.fspath(output) if output else ""
    settings.resume = bool(resume)
    settings.restart = bool(restart)
    settings.retry_failed = bool(retry_failed)
    settings.plugin_path = [os.fspath(p) for p in plugin_path]
    settings.max_in_flight = int(max_in_flight)
    settings.format = fmt
    return settings


def _spill(items, path: str, str_paths: bool) -> None:
    # Items in memory with output=FILE: written to FILE.items.jsonl first, the manifest the
    # journal fingerprints, so that resume=True can check it is given the same items.
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        for index, item in enumerate(items):
            text = _coremap.item_json(item, str_paths)
            if isinstance(text, str):
                out.close()
                os.unlink(tmp)
                raise TypeError(f"item {index}: {text}")
            out.write(text)
            out.write(b"\n")
    os.replace(tmp, path)


def run(plugin, items=None, *, manifest=None, format="auto", config=None, threads=None, serial=False,
        ordered=True, isolate=None, timeout=None, retries=0, max_errors=0, memory_limit=None, output=None,
        resume=False, restart=False, retry_failed=False, progress=None, plugin_path=(), max_in_flight=0,
        star=False, start_method="fork", _sessions=None) -> Run:
    """Runs ``plugin`` over ``items`` (any iterable, read as the run goes) or over a ``manifest``
    file, and returns the run, an iterator of Records.

    ``plugin``: a bundled plugin's name (``"sha256"``), a path to a plugin .so, or a Python
    function (run by the bundled ``python`` plugin in worker processes). Items are JSON values;
    a ``str`` item of a plugin run, and any ``os.PathLike`` item, is ``{"path": str}``, the item
    a list of paths makes. The keywords are coremap run's flags (``coremap run --help``).

    ``start_method`` (Python functions): ``"fork"`` (the default) forks the workers from a copy
    of this process made at its first run of a Python function, while it still had one thread:
    they start at once with what this process had imported then (later changes to its modules'
    state are not seen, as with multiprocessing's forkserver). Where this process already had
    more than one thread then, with ``memory_limit`` and with ``"spawn"``, each worker is
    coremap-worker starting an interpreter that imports the function's module (for a
    ``__main__`` function, the script).
    """
    _refuse_in_main_import()
    if (items is None) == (manifest is None):
        raise TypeError("coremap: give items or manifest= (one of them)")
    if progress is not None and progress is not True and progress is not False and not callable(progress):
        raise TypeError("coremap: progress must be True (a line on standard error) or a callable")
    if progress is True and not sys.stderr.isatty():
        progress = None
    if progress is False:
        progress = None
    settings = _settings(plugin, config=config, star=star, start_method=start_method, threads=threads, serial=serial, ordered=ordered,
                         isolate=isolate, timeout=timeout, retries=retries, max_errors=max_errors,
                         memory_limit=memory_limit, output=output, resume=resume, restart=restart,
                         retry_failed=retry_failed, plugin_path=plugin_path, max_in_flight=max_in_flight,
                         fmt=format)
    total = None
    if items is not None:
        try:
            total = len(items)
        except TypeError:
            total = None
    if items is not None and settings.output:
        spilled = settings.output + ".items.jsonl"
        _spill(items, spilled, settings.str_paths)
        settings.manifest = spilled
        settings.format = "jsonl"
        items = None
    elif manifest is not None:
        settings.manifest = os.fspath(manifest)
    session = None
    if _sessions is not None and items is not None:
        # A Pool's engine for this function and these settings, kept from its earlier calls
        # (its workers stay up); a call made while another is running with it gets its own.
        key = (settings.plugin, settings.config, settings.threads, settings.ordered, settings.isolate,
               settings.timeout, settings.retries, settings.memory_limit, settings.fork)
        session = _sessions.take(key, settings)
    the_run = Run(settings, items, progress, total, session[1] if session else None)
    if session is not None:
        the_run._release = lambda: _sessions.give_back(*session)
    return the_run


imap = run


def map(plugin, items=None, **keywords) -> list:
    """``list(run(plugin, items, ...))``: every item's Record, in index order. With ``output``
    and ``resume=True`` the list holds the earlier run's records too (read back from FILE)."""
    the_run = run(plugin, items, **keywords)
    records = list(the_run)
    if the_run.stats and the_run.stats.get("resumed") and the_run.stats.get("finished") and the_run.output:
        import json
        records = []
        with open(the_run.output, "rb") as f:
            for line in f:
                r = json.loads(line)
                records.append(Record(r["index"], r["ok"], r.get("result"), r.get("error"), r.get("attempts", 1),
                                      r.get("sub")))
    return records


from ._pool import Pool  # noqa: E402  (needs run and ItemError above)
