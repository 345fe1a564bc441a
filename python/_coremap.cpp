// SPDX-License-Identifier: MIT
// The `coremap._coremap` extension module: one coremap run (Engine::run) on a thread of its own
// with the GIL released, fed from a Python iterable or a manifest file, its records handed to
// the calling thread through a bounded queue. coremap/__init__.py builds the public API on it.
#include <Python.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dirent.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <coremap/coremap.hpp>
#include <coremap/resumable_output.hpp>

#include "json_convert.hpp"
#include "json_text.hpp"

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


// Whether `item` is of a type to_json takes (checked first: looking up __fspath__ on an int
// formats an AttributeError message, a cost per item).
bool json_type(PyObject* item) {
  return item == Py_None || PyLong_Check(item) || PyFloat_Check(item) || PyUnicode_Check(item) || PyDict_Check(item) ||
         PyList_Check(item) || PyTuple_Check(item);
}

// JSON text of one item; os.PathLike (and, with `str_paths`, str) as {"path": "..."}, the item
// a `lines` manifest makes of a path. False with `why` when it is not a JSON value. GIL held.
bool item_text(PyObject* item, bool str_paths, std::string& text, std::string& why) {
  text.clear();
  if (str_paths && PyUnicode_Check(item)) {
    Py_ssize_t size = 0;
    const char* s = PyUnicode_AsUTF8AndSize(item, &size);
    if (s != nullptr) {
      text.append("{\"path\":");
      append_json_string(text, std::string_view(s, static_cast<std::size_t>(size)));
      text.push_back('}');
      return true;
    }
    PyErr_Clear();
  } else if (json_type(item) && append_json(item, text)) {
    return true;  // the common case, written straight from the objects
  }
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

// Forks the isolated workers of Python function runs (RunOptions::worker_launcher): a process
// forked from this one at its first such run, while it still has one thread (no lock of
// another thread's copied in a locked state), that waits for requests and answers each with a
// worker forked from itself with CLONE_PARENT, a child of this process as the engine needs,
// which runs become_worker(). A worker so started holds the function's module as this process
// had imported it then (no interpreter to start, no import to repeat); where the function is
// not there (imported or defined later) it imports it, as coremap-worker does.
class ForkServer {
 public:
  // The process's server, started now if it can be (GIL held): null when the process has more
  // than one thread.
  static std::shared_ptr<ForkServer> get() {
    static std::shared_ptr<ForkServer> server;
    static bool tried = false;
    if (!tried && single_threaded()) {
      tried = true;
      server = start();
    }
    return server;
  }

  ~ForkServer() {
    ::close(socket_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }

  // From any thread, without the GIL. -1 once the server is gone (killed): the engine then
  // starts coremap-worker instead.
  int launch(const WorkerLaunch& launch) {
    std::string message = launch.environment_entry;
    for (const std::string& a : launch.arguments) {
      message.push_back('\0');
      message += a;
    }
    int fds[3] = {launch.channel_fd, launch.results_fd, launch.note_fd};
    const int count = launch.note_fd >= 0 ? 3 : 2;
    std::lock_guard lock(mutex_);
    if (gone_) return -1;
    char reply[512];
    ssize_t n = send_with_fds(socket_, message, fds, count);
    if (n >= 0) {
      while ((n = ::recv(socket_, reply, sizeof reply, 0)) < 0 && errno == EINTR) {
      }
    }
    if (n < static_cast<ssize_t>(sizeof(std::int32_t))) {
      gone_ = true;
      int status = 0;
      ::waitpid(pid_, &status, WNOHANG);  // reaped if it has ended (no zombie left)
      return -1;
    }
    std::int32_t pid = 0;
    std::memcpy(&pid, reply, sizeof pid);
    if (pid <= 0) throw std::runtime_error("the fork server could not fork: " + std::string(std::strerror(-pid)));
    return pid;
  }

  pid_t pid() const noexcept { return pid_; }

 private:
  ForkServer(int socket, pid_t pid) : socket_(socket), pid_(pid) {}

  static bool single_threaded() {
    DIR* dir = ::opendir("/proc/self/task");
    if (dir == nullptr) return false;
    int threads = 0;
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') ++threads;
    }
    ::closedir(dir);
    return threads == 1;
  }

  static ssize_t send_with_fds(int socket, const std::string& message, const int* fds, int count) {
    iovec io{const_cast<char*>(message.data()), message.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(static_cast<std::size_t>(count) * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(static_cast<std::size_t>(count) * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, static_cast<std::size_t>(count) * sizeof(int));
    ssize_t n;
    while ((n = ::sendmsg(socket, &header, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    return n;
  }

  static std::shared_ptr<ForkServer> start() {
    // What Python has buffered would otherwise be written again by every worker.
    for (const char* stream : {"stdout", "stderr"}) {
      PyObject* s = PySys_GetObject(stream);  // borrowed
      if (s != nullptr && s != Py_None) {
        PyObject* r = PyObject_CallMethod(s, "flush", nullptr);
        if (r == nullptr) PyErr_Clear();
        Py_XDECREF(r);
      }
    }
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return nullptr;
    const pid_t parent = ::getpid();
    PyOS_BeforeFork();
    const pid_t pid = ::fork();
    if (pid == 0) {
      PyOS_AfterFork_Child();
      serve(fds[1], parent);
    }
    PyOS_AfterFork_Parent();
    ::close(fds[1]);
    if (pid < 0) {
      ::close(fds[0]);
      return nullptr;
    }
    return std::shared_ptr<ForkServer>(new ForkServer(fds[0], pid));
  }

  // The server's loop, until this process closes its end (or dies).
  [[noreturn]] static void serve(int socket, pid_t parent) {
    ::setpgid(0, 0);  // a Ctrl-C at the terminal is the caller's to handle
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::getppid() != parent) ::_exit(0);
    // The caller's descriptors stay with the caller (a pipe's write end kept here would keep its
    // reader waiting for its end forever).
    if (::dup2(socket, 3) < 0) ::_exit(2);
    socket = 3;
    ::close_range(4, ~0U, 0);
    std::string message(1 << 16, '\0');
    for (;;) {
      iovec io{message.data(), message.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
      msghdr header{};
      header.msg_iov = &io;
      header.msg_iovlen = 1;
      header.msg_control = control;
      header.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ::_exit(0);
      int fds[3] = {-1, -1, -1};
      for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr; c = CMSG_NXTHDR(&header, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          std::memcpy(fds, CMSG_DATA(c), std::min<std::size_t>(c->cmsg_len - CMSG_LEN(0), sizeof fds));
        }
      }
      WorkerLaunch launch;
      std::size_t start = 0;
      const std::string_view text(message.data(), static_cast<std::size_t>(n));
      for (bool first = true;; first = false) {
        const std::size_t end = std::min(text.find('\0', start), text.size());
        std::string part(text.substr(start, end - start));
        if (first) launch.environment_entry = std::move(part);
        else launch.arguments.push_back(std::move(part));
        if (end == text.size()) break;
        start = end + 1;
      }
      launch.channel_fd = fds[0];
      launch.results_fd = fds[1];
      launch.note_fd = fds[2];
      PyOS_BeforeFork();
      // CLONE_PARENT: the worker is the caller's child, as a worker the engine started itself.
      // This process has one thread, so a fork without glibc's handlers leaves no lock held.
      const long pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
      const int clone_error = errno;
      if (pid == 0) {
        PyOS_AfterFork_Child();
        ::close(socket);
        become_worker(launch);
      }
      PyOS_AfterFork_Parent();
      const std::int32_t reply = pid > 0 ? static_cast<std::int32_t>(pid) : -clone_error;
      for (const int fd : fds) {
        if (fd >= 0) ::close(fd);
      }
      if (::send(socket, &reply, sizeof reply, MSG_NOSIGNAL) < 0) ::_exit(0);
    }
  }

  int socket_;
  pid_t pid_;
  std::mutex mutex_;
  bool gone_ = false;
};

// Writes the records to the output file (when there is one), then queues their text for the
// caller, who turns it into Python objects a batch at a time (parse_record): bounded, so a
// caller that reads slowly holds the run back instead of its memory growing.
class QueueSink final : public Sink {
 public:
  QueueSink(Sink* file, std::size_t capacity, std::size_t capacity_bytes)
      : file_(file), capacity_(capacity), capacity_bytes_(capacity_bytes) {}

  void write(std::string_view records) override {
    if (file_ != nullptr) file_->write(records);
    if (records.empty()) return;
    const auto count = static_cast<std::size_t>(std::count(records.begin(), records.end(), '\n'));
    std::unique_lock lock(mutex_);
    // A chunk larger than the bounds still goes in once the queue is empty.
    space_.wait(lock, [&] {
      return abandoned_ || queue_.empty() || (queued_ < capacity_ && queued_bytes_ < capacity_bytes_);
    });
    if (abandoned_) return;
    queue_.emplace_back(records);
    queued_ += count;
    queued_bytes_ += records.size();
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
    queued_ = queued_bytes_ = 0;
    space_.notify_all();
  }

  // Chunks of records (JSON Lines) holding up to about `max` records (at least one chunk),
  // waiting at most `wait` for the first; `closed` says no more will come.
  std::vector<std::string> take(std::size_t max, std::chrono::milliseconds wait, bool& closed) {
    std::vector<std::string> out;
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, wait, [&] { return closed_ || !queue_.empty(); });
    std::size_t taken = 0;
    while (!queue_.empty() && (out.empty() || taken < max)) {
      const auto count = static_cast<std::size_t>(std::count(queue_.front().begin(), queue_.front().end(), '\n'));
      taken += count;
      queued_ -= count;
      queued_bytes_ -= queue_.front().size();
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
  std::size_t capacity_bytes_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::deque<std::string> queue_;
  std::size_t queued_ = 0;
  std::size_t queued_bytes_ = 0;
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
  // isolate: fork the workers from a copy of this process (ForkServer) where it can be made.
  bool fork = false;
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
  if (settings.isolate && settings.fork) {
    if (std::shared_ptr<ForkServer> server = ForkServer::get()) {
      options.worker_launcher = [server](const WorkerLaunch& launch) { return server->launch(launch); };
    }
  }
  return options;
}

// An engine kept for several runs one after another (a coremap.Pool's calls of one function):
// its isolated workers stay up between them. Items in memory only, no output. Its runs go on
// one thread of its own: the engine keeps a worker per thread that runs batches, so a thread of
// each run's own would start another worker for every call.
class Session {
 public:
  explicit Session(const Settings& settings) : progress_(std::make_shared<ProgressSlot>()) {
    if (!settings.output.empty() || settings.resume) throw UsageError("a session's runs have no output");
    RunOptions options = run_options(settings, progress_);  // GIL held: it may start the fork server
    py::gil_scoped_release release;
    std::vector<std::filesystem::path> dirs(settings.plugin_path.begin(), settings.plugin_path.end());
    auto plugin = PluginLoader(dirs).load(settings.plugin);
    const Json config = settings.config.empty() ? Json::object() : Json::parse(settings.config);
    engine_ = std::make_shared<Engine>(plugin, plugin->resolve_config(config), std::move(options));
    thread_ = std::thread([this] { serve(); });
  }
  ~Session() {
    py::gil_scoped_release release;  // ending the workers may take a while
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
      wake_.notify_all();
    }
    thread_.join();
    engine_.reset();
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::shared_ptr<Engine>& engine() const noexcept { return engine_; }
  const std::shared_ptr<ProgressSlot>& progress() const noexcept { return progress_; }

  // Runs `task` on the session's thread, after those posted before; the future says when it is done.
  std::future<void> post(std::function<void()> task) {
    std::packaged_task<void()> packaged(std::move(task));
    std::future<void> done = packaged.get_future();
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(packaged));
    wake_.notify_all();
    return done;
  }

 private:
  void serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return quit_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      std::packaged_task<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::shared_ptr<ProgressSlot> progress_;
  std::shared_ptr<Engine> engine_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::packaged_task<void()>> tasks_;
  bool quit_ = false;
  std::thread thread_;
};

// The records the run's thread may hold for a caller that has not taken them yet.
constexpr std::size_t queue_records = 8192;
constexpr std::size_t queue_bytes = std::size_t{16} << 20;

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
      sink_ = std::make_unique<QueueSink>(nullptr, queue_records, queue_bytes);
      done_ = session->post([this] { body(); });
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
      sink_ = std::make_unique<QueueSink>(resumable_ ? &resumable_->sink() : nullptr, queue_records, queue_bytes);
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
    std::vector<std::string> chunks;
    bool closed = false;
    while (true) {
      {
        py::gil_scoped_release release;
        chunks = sink_->take(max, std::chrono::milliseconds(50), closed);
      }
      if (!chunks.empty() || closed) break;
      if (PyErr_CheckSignals() != 0) {
        py::error_already_set interrupt;
        stop();
        throw interrupt;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    py::list out(0);
    for (const std::string& chunk : chunks) {
      std::size_t start = 0;
      while (start < chunk.size()) {
        std::size_t end = chunk.find('\n', start);
        if (end == std::string::npos) end = chunk.size();
        if (end > start) {
          PyObject* record = parse_record(std::string_view(chunk).substr(start, end - start));
          if (record == nullptr || PyList_Append(out.ptr(), record) != 0) {
            Py_XDECREF(record);
            throw py::error_already_set();
          }
          Py_DECREF(record);
        }
        start = end + 1;
      }
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
    if (engine_ && running()) engine_->request_stop();
    sink_->abandon();
    join();
  }

  bool running() const { return thread_.joinable() || done_.valid(); }

  void close() {
    if (running()) stop();
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
      // JSON Lines, to the file when there is one, and read into Python objects by next().
      stats_ = engine_->run(source, *sink_);
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
    if (!running()) return;
    py::gil_scoped_release release;  // the run's input stage takes the GIL for the items
    if (thread_.joinable()) thread_.join();
    if (done_.valid()) done_.get();
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
  std::thread thread_;       // the run's own thread, or
  std::future<void> done_;   // its session's thread's task
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
      .def_readwrite("max_in_flight", &Settings::max_in_flight)
      .def_readwrite("fork", &Settings::fork);

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
  m.def(
      "fork_server_pid",
      [] {
        std::shared_ptr<ForkServer> server = ForkServer::get();
        return server ? static_cast<long>(server->pid()) : 0L;
      },
      "the pid of the process that forks Python function workers (started now if it can be), or 0 when "
      "this process had more than one thread before its first run of a Python function");
  m.def("version", [] { return std::string(coremap::version()); });
  m.def("default_threads", [] { return static_cast<std::size_t>(std::thread::hardware_concurrency()); });
}
