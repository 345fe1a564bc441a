// SPDX-License-Identifier: MIT
// The `coremap._coremap` extension module: one coremap run (Engine::run) on a thread of its own
// with the GIL released, fed from a Python iterable or a manifest file, its records handed to
// the calling thread through a bounded queue. coremap/__init__.py builds the public API on it.
#include <Python.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <coremap/coremap.hpp>
#include <coremap/resumable_output.hpp>

#include "json_convert.hpp"

namespace py = pybind11;

namespace coremap::python {
namespace {

// Raised on the caller's thread as TypeError: an item that is not a JSON value.
class ItemTypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The Python exception the items' iterator raised, carried to the caller's thread.
class IteratorFailed : public std::runtime_error {
 public:
  IteratorFailed() : std::runtime_error("the items' iterator raised an exception") {}
};

struct ParsedRecord {
  std::uint64_t index = 0;
  bool ok = false;
  Json value;  // the result, or the error text as a string
  std::uint32_t attempts = 1;
  std::int64_t sub = -1;
};

// Whether `item` is of a type to_json takes (checked first: looking up __fspath__ on an int
// formats an AttributeError message, a cost per item).
bool json_type(PyObject* item) {
  return item == Py_None || PyLong_Check(item) || PyFloat_Check(item) || PyUnicode_Check(item) || PyDict_Check(item) ||
         PyList_Check(item) || PyTuple_Check(item);
}

// JSON text of one item; os.PathLike (and, with `str_paths`, str) as {"path": "..."}, the item
// a `lines` manifest makes of a path. False with `why` when it is not a JSON value. GIL held.
bool item_text(PyObject* item, bool str_paths, std::string& text, std::string& why) {
  Json value;
  std::string where;
  if (str_paths && PyUnicode_Check(item)) {
    Py_ssize_t size = 0;
    const char* s = PyUnicode_AsUTF8AndSize(item, &size);
    if (s == nullptr) {
      PyErr_Clear();
      why = "str is not valid UTF-8 (a lone surrogate)";
      return false;
    }
    value = Json{{"path", std::string(s, static_cast<std::size_t>(size))}};
  } else if (!json_type(item) && PyObject_HasAttrString(item, "__fspath__")) {
    PyObject* path = PyOS_FSPath(item);
    if (path == nullptr || !PyUnicode_Check(path)) {
      Py_XDECREF(path);
      PyErr_Clear();
      why = std::string(Py_TYPE(item)->tp_name) + " is a path that is not str";
      return false;
    }
    Py_ssize_t size = 0;
    const char* s = PyUnicode_AsUTF8AndSize(path, &size);
    if (s == nullptr) {
      PyErr_Clear();
      Py_DECREF(path);
      why = "path is not valid UTF-8";
      return false;
    }
    value = Json{{"path", std::string(s, static_cast<std::size_t>(size))}};
    Py_DECREF(path);
  } else if (!to_json(item, value, why, where)) {
    return false;
  }
  text = value.dump(-1, ' ', false, Json::error_handler_t::strict);
  return true;
}

// Items from a Python iterator, converted to JSON text on the engine's input stage (with the GIL,
// a batch at a time), so a generator is read as the run goes and never held whole.
class PythonSource final : public BatchSource {
 public:
  PythonSource(py::object iterator, bool str_paths) : iterator_(std::move(iterator)), str_paths_(str_paths) {}
  ~PythonSource() override {
    py::gil_scoped_acquire gil;  // the source may end on a thread that never ran Python
    iterator_ = py::object();
    Py_XDECREF(error_type_);
    Py_XDECREF(error_value_);
    Py_XDECREF(error_traceback_);
  }

  bool next_batch(ItemBatch& batch, std::size_t max_items, std::size_t max_bytes) override {
    batch.clear();
    if (done_) return false;
    py::gil_scoped_acquire gil;  // on the engine's input stage: a thread that may never have run Python
    std::string text;
    std::string why;
    while (batch.items.size() < max_items && batch.bytes.size() < max_bytes) {
      PyObject* item = PyIter_Next(iterator_.ptr());
      if (item == nullptr) {
        done_ = true;
        if (PyErr_Occurred()) {
          PyErr_Fetch(&error_type_, &error_value_, &error_traceback_);
          throw IteratorFailed();
        }
        break;
      }
      const bool ok = item_text(item, str_paths_, text, why);
      Py_DECREF(item);
      if (!ok) {
        done_ = true;
        throw ItemTypeError("item " + std::to_string(next_index_) + ": " + why);
      }
      batch.items.push_back(RawItem{next_index_, next_index_, batch.bytes.size(), text.size(), false});
      batch.bytes += text;
      ++next_index_;
    }
    return !batch.items.empty();
  }

  const std::string& name() const noexcept override { return name_; }
  ManifestFormat format() const noexcept override { return ManifestFormat::jsonl; }

  // Restores the iterator's exception as the current Python error (GIL held).
  void restore_error() {
    PyErr_Restore(error_type_, error_value_, error_traceback_);
    error_type_ = error_value_ = error_traceback_ = nullptr;
  }

 private:
  py::object iterator_;
  bool str_paths_;
  bool done_ = false;
  std::uint64_t next_index_ = 0;
  std::string name_ = "item";
  PyObject* error_type_ = nullptr;
  PyObject* error_value_ = nullptr;
  PyObject* error_traceback_ = nullptr;
};

// Writes the records to the output file (when there is one), then parses them for the caller's
// queue: bounded, so a caller that reads slowly holds the run back instead of its memory growing.
class QueueSink final : public Sink {
 public:
  QueueSink(Sink* file, std::size_t capacity) : file_(file), capacity_(capacity) {}

  void write(std::string_view records) override {
    if (file_ != nullptr) file_->write(records);
    std::size_t start = 0;
    while (start < records.size()) {
      std::size_t end = records.find('\n', start);
      if (end == std::string_view::npos) end = records.size();
      if (end > start) push(parse(records.substr(start, end - start)));
      start = end + 1;
    }
  }

  static ParsedRecord parse(std::string_view line) {
    ParsedRecord record;
    Json json = Json::parse(line);
    record.index = json.at("index").get<std::uint64_t>();
    record.ok = json.at("ok").get<bool>();
    if (record.ok) {
      record.value = std::move(json.at("result"));
    } else {
      record.value = std::move(json.at("error"));
    }
    if (auto it = json.find("attempts"); it != json.end()) record.attempts = it->get<std::uint32_t>();
    if (auto it = json.find("sub"); it != json.end()) record.sub = it->get<std::int64_t>();
    return record;
  }

  void push(ParsedRecord record) {
    std::unique_lock lock(mutex_);
    space_.wait(lock, [&] { return abandoned_ || queue_.size() < capacity_; });
    if (abandoned_) return;
    queue_.push_back(std::move(record));
    if (queue_.size() == 1) ready_.notify_one();  // the caller waits only on an empty queue
  }

  // The run's thread is done: no more records.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    ready_.notify_all();
  }

  // The caller stopped reading: records still go to the file, the queue drops them.
  void abandon() {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
    queue_.clear();
    space_.notify_all();
  }

  // Up to `max` records, waiting at most `wait` for the first; `closed` says no more will come.
  std::vector<ParsedRecord> take(std::size_t max, std::chrono::milliseconds wait, bool& closed) {
    std::vector<ParsedRecord> out;
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, wait, [&] { return closed_ || !queue_.empty(); });
    while (!queue_.empty() && out.size() < max) {
      out.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    if (!out.empty()) space_.notify_all();
    closed = closed_ && queue_.empty();
    return out;
  }

 private:
  Sink* file_;
  std::size_t capacity_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::deque<ParsedRecord> queue_;
  bool closed_ = false;
  bool abandoned_ = false;
};

struct Settings {
  std::string plugin;
  std::string config;  // JSON text
  std::vector<std::string> plugin_path;
  std::string manifest;  // a manifest file instead of items
  std::string format = "auto";
  std::size_t threads = 0;
  bool serial = false;
  bool ordered = true;
  bool isolate = false;
  double timeout = 0;
  std::uint32_t retries = 0;
  std::uint64_t max_errors = 0;
  std::string memory_limit;
  std::string output;
  bool resume = false;
  bool restart = false;
  bool retry_failed = false;
  bool str_paths = false;
  std::size_t max_in_flight = 0;
};

std::size_t parse_size(const std::string& text) {
  if (text.empty()) return 0;
  std::size_t used = 0;
  double value = std::stod(text, &used);
  std::string unit = text.substr(used);
  double scale = 1;
  if (unit == "K" || unit == "k") scale = 1024.0;
  else if (unit == "M" || unit == "m") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "g") scale = 1024.0 * 1024 * 1024;
  else if (!unit.empty()) throw UsageError("memory_limit: unknown unit '" + unit + "' in '" + text + "' (use K, M or G)");
  if (!(value > 0)) throw UsageError("memory_limit must be positive, got '" + text + "'");
  return static_cast<std::size_t>(value * scale);
}

// The latest progress snapshot of an engine's run, written by its progress thread.
struct ProgressSlot {
  std::mutex mutex;
  ProgressSnapshot snapshot;
};

RunOptions run_options(const Settings& settings, const std::shared_ptr<ProgressSlot>& progress) {
  RunOptions options;
    options.threads = settings.threads;
    options.serial = settings.serial;
    options.ordered = settings.ordered;
    options.isolate = settings.isolate;
    options.retries = settings.retries;
    options.max_errors = settings.max_errors;
    options.max_in_flight = settings.max_in_flight;
    options.memory_limit_bytes = parse_size(settings.memory_limit);
    if (settings.timeout > 0) {
      options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(settings.timeout * 1000)));
    }
    options.on_progress = [progress](const ProgressSnapshot& snapshot) {
      std::lock_guard lock(progress->mutex);
      progress->snapshot = snapshot;
    };
  return options;
}

// An engine kept for several runs one after another (a coremap.Pool's calls of one function):
// its isolated workers stay up between them. Items in memory only, no output.
class Session {
 public:
  explicit Session(const Settings& settings) : progress_(std::make_shared<ProgressSlot>()) {
    if (!settings.output.empty() || settings.resume) throw UsageError("a session's runs have no output");
    py::gil_scoped_release release;
    std::vector<std::filesystem::path> dirs(settings.plugin_path.begin(), settings.plugin_path.end());
    auto plugin = PluginLoader(dirs).load(settings.plugin);
    const Json config = settings.config.empty() ? Json::object() : Json::parse(settings.config);
    engine_ = std::make_shared<Engine>(plugin, plugin->resolve_config(config), run_options(settings, progress_));
  }
  ~Session() {
    py::gil_scoped_release release;  // ending the workers may take a while
    engine_.reset();
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::shared_ptr<Engine>& engine() const noexcept { return engine_; }
  const std::shared_ptr<ProgressSlot>& progress() const noexcept { return progress_; }

 private:
  std::shared_ptr<ProgressSlot> progress_;
  std::shared_ptr<Engine> engine_;
};

// One run: set up on the caller's thread (setup errors raise there), carried out on its own.
class Run {
 public:
  // `session`: run on its engine (set up already) instead of one of the run's own.
  Run(const Settings& settings, py::object items, Session* session)
      : settings_(settings), progress_(session ? session->progress() : std::make_shared<ProgressSlot>()) {
    if (!items.is_none()) source_ = std::make_unique<PythonSource>(py::iter(items), settings.str_paths);
    if (session != nullptr) {
      if (source_ == nullptr || !settings.output.empty()) throw UsageError("a session's runs take items, no output");
      engine_ = session->engine();
      py::gil_scoped_release release;
      sink_ = std::make_unique<QueueSink>(nullptr, 4096);
      thread_ = std::thread([this] { body(); });
      return;
    }
    RunOptions options = run_options(settings, progress_);
    {
      py::gil_scoped_release release;
      std::vector<std::filesystem::path> dirs(settings.plugin_path.begin(), settings.plugin_path.end());
      auto plugin = PluginLoader(dirs).load(settings.plugin);
      Json config = settings.config.empty() ? Json::object() : Json::parse(settings.config);
      const Json resolved = plugin->resolve_config(config);
      if (source_ == nullptr) {
        manifest_.emplace(settings.manifest, parse_manifest_format(settings.format));
      }
      if (!settings.output.empty()) {
        if (settings.manifest.empty()) throw UsageError("output needs a manifest file to fingerprint");
        resumable_.emplace(settings.output, run_fingerprint(settings.manifest, manifest_->format(), *plugin, resolved),
                           ResumableOutput::Options{.resume = settings.resume,
                                                    .retry_failed = settings.retry_failed,
                                                    .restart = settings.restart});
        options.skip = resumable_->done();
      } else if (settings.resume) {
        throw UsageError("resume=True needs output=FILE: the earlier run's records are read back from FILE.part");
      }
      engine_ = std::make_shared<Engine>(plugin, resolved, options);
      if (resumable_) resumable_->open();
      sink_ = std::make_unique<QueueSink>(resumable_ ? &resumable_->sink() : nullptr, 4096);
      thread_ = std::thread([this] { body(); });
    }
  }

  ~Run() {
    try {
      close();
    } catch (...) {
    }
  }

  // Up to `max` records as (index, ok, result or error, attempts, sub) tuples, waiting up to
  // `wait_seconds` for the first, and whether the run has delivered its last. Raises what the
  // run raised once every record is taken; KeyboardInterrupt (any signal handler's exception)
  // stops the run.
  py::tuple next(std::size_t max, double wait_seconds) {
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(static_cast<std::int64_t>(wait_seconds * 1000));
    std::vector<ParsedRecord> records;
    bool closed = false;
    while (true) {
      {
        py::gil_scoped_release release;
        records = sink_->take(max, std::chrono::milliseconds(50), closed);
      }
      if (!records.empty() || closed) break;
      if (PyErr_CheckSignals() != 0) {
        py::error_already_set interrupt;
        stop();
        throw interrupt;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    py::list out(records.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
      ParsedRecord& r = records[i];
      PyObject* value = r.ok ? from_json(r.value) : nullptr;
      if (r.ok && value == nullptr) throw py::error_already_set();
      if (r.ok && r.attempts == 1 && r.sub < 0) {
        // The common record, built with the C API (pybind11's casts cost more per record).
        PyObject* tuple = PyTuple_New(5);
        if (tuple == nullptr) {
          Py_DECREF(value);
          throw py::error_already_set();
        }
        PyTuple_SET_ITEM(tuple, 0, PyLong_FromUnsignedLongLong(r.index));
        PyTuple_SET_ITEM(tuple, 1, Py_NewRef(Py_True));
        PyTuple_SET_ITEM(tuple, 2, value);
        PyTuple_SET_ITEM(tuple, 3, PyLong_FromLong(1));
        PyTuple_SET_ITEM(tuple, 4, Py_NewRef(Py_None));
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), tuple);
        continue;
      }
      if (!r.ok) {
        // An error from the record callback is the plugin's text: bytes that are not UTF-8 are
        // shown as \xNN, as the JSON Lines writer shows them.
        const auto& text = r.value.get_ref<const std::string&>();
        value = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "backslashreplace");
        if (value == nullptr) throw py::error_already_set();
      }
      py::object v = py::reinterpret_steal<py::object>(value);
      out[i] = py::make_tuple(r.index, r.ok, std::move(v), r.attempts, r.sub < 0 ? py::object(py::none()) : py::int_(r.sub));
    }
    if (closed) {
      join();
      rethrow();
    }
    return py::make_tuple(std::move(out), closed);
  }

  // Stops the run (no new item starts; what is done is kept) and waits for its thread.
  void stop() {
    stopping_ = true;
    if (engine_ && thread_.joinable()) engine_->request_stop();
    sink_->abandon();
    join();
  }

  void close() {
    if (thread_.joinable()) stop();
  }

  py::dict progress() {
    ProgressSnapshot s;
    {
      std::lock_guard lock(progress_->mutex);
      s = progress_->snapshot;
    }
    py::dict d;
    d["done"] = s.done;
    d["failed"] = s.failed;
    d["total_items"] = s.total_items;
    d["bytes_read"] = s.bytes_read;
    d["total_bytes"] = s.total_bytes;
    d["seconds"] = s.seconds;
    return d;
  }

  py::dict stats() const {
    py::dict d;
    d["items"] = stats_.items;
    d["records"] = stats_.records;
    d["ok"] = stats_.ok;
    d["failed"] = stats_.failed;
    d["skipped"] = stats_.skipped;
    d["not_run"] = stats_.not_run;
    d["wall_seconds"] = stats_.wall_seconds;
    d["threads"] = stats_.threads;
    d["stopped"] = stats_.stopped == StopReason::none        ? "" :
                   stats_.stopped == StopReason::max_errors ? "max_errors" : "cancelled";
    d["earlier_ok"] = earlier_ok_;
    d["earlier_failed"] = earlier_failed_;
    d["resumed"] = resumed_;
    d["finished"] = finished_;
    d["partial"] = partial_;
    return d;
  }

 private:
  void body() {
    try {
      BatchSource& source = source_ ? static_cast<BatchSource&>(*source_) : *manifest_;
      if (resumable_) {
        // Written to the file as JSON Lines, and parsed back for the caller.
        stats_ = engine_->run(source, *sink_);
      } else {
        stats_ = engine_->run(source, [this](const Record& record) {
          sink_->push(ParsedRecord{record.index, record.ok, record.ok ? record.result : Json(record.error),
                                   record.attempts, record.sub});
        });
      }
      if (resumable_) {
        if (stopping_ || stats_.stopped != StopReason::none) {
          partial_ = resumable_->keep_partial();
        } else {
          resumable_->finish(settings_.ordered);
          finished_ = true;
        }
      } else {
        finished_ = !stopping_ && stats_.stopped == StopReason::none;
      }
    } catch (...) {
      error_ = std::current_exception();
      if (resumable_) {
        try {
          partial_ = resumable_->keep_partial();
        } catch (...) {
        }
      }
    }
    sink_->close();
  }

  // Waits for the run's thread, then ends the workers and releases the output (its lock), so
  // that a later run (resume=True) may take it while this object lives on.
  void join() {
    if (!thread_.joinable()) return;
    py::gil_scoped_release release;  // the run's input stage takes the GIL for the items
    thread_.join();
    if (resumable_) {
      earlier_ok_ = resumable_->earlier_ok();
      earlier_failed_ = resumable_->earlier_failed();
      resumed_ = resumable_->resumed();
    }
    engine_.reset();
    resumable_.reset();
    manifest_.reset();
  }

  void rethrow() {
    if (!error_) return;
    std::exception_ptr error = error_;
    error_ = nullptr;
    try {
      std::rethrow_exception(error);
    } catch (const IteratorFailed&) {
      source_->restore_error();
      throw py::error_already_set();
    } catch (const ItemTypeError& e) {
      throw py::type_error(e.what());
    }
  }

  Settings settings_;
  std::unique_ptr<PythonSource> source_;
  std::optional<ManifestReader> manifest_;
  std::optional<ResumableOutput> resumable_;
  std::shared_ptr<ProgressSlot> progress_;
  std::shared_ptr<Engine> engine_;  // a session's, or the run's own
  std::unique_ptr<QueueSink> sink_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
  RunStats stats_;
  bool finished_ = false;
  std::string partial_;
  std::uint64_t earlier_ok_ = 0;
  std::uint64_t earlier_failed_ = 0;
  bool resumed_ = false;
};

// A Python item as the JSON text the run would send (for spilling items to a manifest file).
py::object item_json(py::handle item, bool str_paths) {
  std::string text;
  std::string why;
  if (!item_text(item.ptr(), str_paths, text, why)) return py::str(why);
  return py::bytes(text);
}

}  // namespace
}  // namespace coremap::python

PYBIND11_MODULE(_coremap, m) {
  using namespace coremap::python;
  m.doc() = "coremap's engine for Python (see the coremap package)";
  // Each error class with its translator (pybind11 tries the last registered first, so the
  // subclasses come before coremap::Error).
  const auto& error = py::register_exception<coremap::Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<coremap::UsageError>(m, "UsageError", error.ptr());
  py::register_exception<coremap::ConfigError>(m, "ConfigError", error.ptr());
  py::register_exception<coremap::PluginError>(m, "PluginError", error.ptr());
  py::register_exception<coremap::ManifestError>(m, "ManifestError", error.ptr());
  py::register_exception<coremap::OutputError>(m, "OutputError", error.ptr());
  py::register_exception<coremap::ResumeError>(m, "ResumeError", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nlohmann::json::exception& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<Settings>(m, "Settings")
      .def(py::init<>())
      .def_readwrite("plugin", &Settings::plugin)
      .def_readwrite("config", &Settings::config)
      .def_readwrite("plugin_path", &Settings::plugin_path)
      .def_readwrite("manifest", &Settings::manifest)
      .def_readwrite("format", &Settings::format)
      .def_readwrite("threads", &Settings::threads)
      .def_readwrite("serial", &Settings::serial)
      .def_readwrite("ordered", &Settings::ordered)
      .def_readwrite("isolate", &Settings::isolate)
      .def_readwrite("timeout", &Settings::timeout)
      .def_readwrite("retries", &Settings::retries)
      .def_readwrite("max_errors", &Settings::max_errors)
      .def_readwrite("memory_limit", &Settings::memory_limit)
      .def_readwrite("output", &Settings::output)
      .def_readwrite("resume", &Settings::resume)
      .def_readwrite("restart", &Settings::restart)
      .def_readwrite("retry_failed", &Settings::retry_failed)
      .def_readwrite("str_paths", &Settings::str_paths)
      .def_readwrite("max_in_flight", &Settings::max_in_flight);

  py::class_<Session>(m, "Session").def(py::init<const Settings&>(), py::arg("settings"));

  py::class_<Run>(m, "Run")
      .def(py::init<const Settings&, py::object, Session*>(), py::arg("settings"), py::arg("items"),
           py::arg("session") = nullptr, py::keep_alive<1, 4>())
      .def("next", &Run::next, py::arg("max"), py::arg("wait"))
      .def("stop", &Run::stop)
      .def("close", &Run::close)
      .def("progress", &Run::progress)
      .def("stats", &Run::stats);

  m.def("item_json", &item_json, py::arg("item"), py::arg("str_paths"),
        "the JSON text (bytes) the run sends for `item`, or a str saying why it is not a JSON value");
  m.def("version", [] { return std::string(coremap::version()); });
  m.def("default_threads", [] { return static_cast<std::size_t>(std::thread::hardware_concurrency()); });
}
