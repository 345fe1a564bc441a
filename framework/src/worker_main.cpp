// SPDX-License-Identifier: MIT
// The isolated worker process (coremap-worker): loads the plugin, runs the items the engine
// sends over its pipe, answers with one frame per item, and dies with its parent (worker_main.hpp).
#include "worker_main.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <coremap/error.hpp>
#include <coremap/loaded_plugin.hpp>
#include <coremap/process_tree.hpp>
#include <coremap/record.hpp>

#include "item_parser.hpp"
#include "worker_note.hpp"
#include "worker_protocol.hpp"

namespace coremap::detail {
namespace {

// Touched by the signal handler, so plain globals of lock-free types. The channel: batches come
// in on the engine's socket, outcomes go out through a pipe (a small write to a pipe shares
// its page with the ones before; a socket allocates a buffer for each, most of a tiny item's
// cost).
int channel_in = -1;
int channel_out = -1;
// The page shared with the engine (worker_note.hpp); null when the engine gave none.
WorkerNote* note_page = nullptr;
// True while the plugin runs an item: an exit() then is that item's end (worker_exit_called).
std::atomic<bool> item_running{false};
std::atomic<bool> allocation_failed{false};
constexpr char out_of_memory_frame[frame_header_size] = {0, 0, 0, 0, static_cast<char>(FrameKind::out_of_memory)};

// With --memory-limit, a failed allocation first passes here, so that a crash soon after (a
// bad_alloc escaping a noexcept function ends in std::terminate, SIGABRT) can be reported as
// running out of memory rather than as a bare signal.
void on_allocation_failure() {
  allocation_failed.store(true, std::memory_order_relaxed);
  throw std::bad_alloc();
}

struct sigaction previous_fatal[NSIG];

// A crash takes the worker's descendants with it (the worker is a subreaper: all of them are
// below it), then dies of the same signal through the handler that was there before.
extern "C" void on_fatal_signal(int signal_number) {
  if (allocation_failed.load(std::memory_order_relaxed)) {
    [[maybe_unused]] const auto n = ::write(channel_out, out_of_memory_frame, sizeof out_of_memory_frame);
  }
  process_tree::kill_descendants();
  ::sigaction(signal_number, &previous_fatal[signal_number], nullptr);
  ::raise(signal_number);
}

// The engine's stop (Ctrl-C, --max-errors, cancellation) reaches the plugin as
// Context::cancelled(): the engine sends this signal, the handler sets the flag.
// With the note page, Context reads the engine's own flag there (set before the signal).
std::atomic<bool> run_stopped{false};
const std::atomic<bool>* stop_flag = &run_stopped;
extern "C" void on_run_stopped(int) {
  run_stopped.store(true, std::memory_order_relaxed);
  if (note_page != nullptr) note_page->stop.store(true, std::memory_order_relaxed);
}
bool run_is_stopped() noexcept { return run_stopped.load(std::memory_order_relaxed) || stop_flag->load(std::memory_order_relaxed); }

// The parent-death signal, and the pipe its handler wakes the watchdog through.
int parent_death_signal() { return SIGRTMIN + 1; }
pid_t parent_pid = 0;
int parent_death_pipe[2] = {-1, -1};

extern "C" void on_parent_death(int) {
  const int saved = errno;
  [[maybe_unused]] const auto n = ::write(parent_death_pipe[1], "x", 1);
  errno = saved;
}

// A child the plugin forks (fork(), not posix_spawn or vfork, which run no atfork handlers)
// gets no copy of the channel: it could hold the channel open after the worker died, or write
// into it. And it dies with the worker: the parent-death signal fires when the thread that
// forked it ends, and items run on the worker's main thread, which lives as long as the worker.
extern "C" void close_channel_in_child() {
  if (channel_in >= 0) ::close(channel_in);
  if (channel_out >= 0) ::close(channel_out);
  channel_in = channel_out = -1;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

// "the worker lost its channel to coremap (<what>: <strerror(errno)>)" as the note for the
// engine: a plugin closed or replaced the worker's descriptor, or wrote into it.
void note_lost_channel(const char* what, const char* why) {
  write_note(note_page, std::string("the worker lost its channel to coremap (") + what + ": " + why + ")");
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Blocks for the next frame; nothing at end of input.
std::optional<Frame> read_frame(int fd, FrameReader& in) {
  for (;;) {
    if (auto frame = in.next()) return frame;
    constexpr std::size_t chunk = 64 * 1024;
    const ssize_t n = ::read(fd, in.prepare(chunk), chunk);
    if (n == 0) {
      if (in.pending() != 0) throw ProtocolError("input ended inside a frame");
      return std::nullopt;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ProtocolError(std::string("read: ") + std::strerror(errno));
    }
    in.commit(static_cast<std::size_t>(n));
  }
}

// If the engine goes away without closing the channel cleanly (killed, or a second Ctrl-C)
// while process() hangs, nothing would ever end this process: the channel's hang-up does, and
// so does the parent-death signal. Either way the worker's descendants (the commands an exec
// item started, children a plugin forked) are killed before it exits.
void start_orphan_watchdog() {
  std::thread([] {
    int pipe_fd = parent_death_pipe[0];
    for (;;) {
      // Once the item called exit() the worker shut its channel down itself: the hang-up is
      // no news, and a hanging exit is the engine's to kill. A plugin may also have closed
      // either descriptor (POLLNVAL): a closed channel is a hang-up, a closed pipe is no
      // longer watched.
      const bool exiting = note_page != nullptr && note_page->exit_called.load(std::memory_order_relaxed) != 0;
      pollfd p[2] = {{exiting ? -1 : channel_in, 0, 0}, {pipe_fd, POLLIN, 0}};
      if (p[0].fd < 0 && p[1].fd < 0) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      if (::poll(p, 2, -1) < 0) continue;  // EINTR
      if ((p[1].revents & POLLNVAL) != 0) {
        pipe_fd = -1;
        continue;
      }
      if (p[1].revents != 0) {
        char byte;
        [[maybe_unused]] const auto n = ::read(pipe_fd, &byte, 1);
        // PR_SET_PDEATHSIG fires when the *thread* that started the worker ends, and the engine
        // starts workers from its TBB threads: only a new parent means the engine is gone.
        if (::getppid() == parent_pid) continue;
      } else {
        if (note_page != nullptr && note_page->exit_called.load(std::memory_order_relaxed) != 0) continue;
        // Give a normal shutdown (end of input, plugin destructor) time to finish first.
        std::this_thread::sleep_for(std::chrono::seconds(2));
      }
      process_tree::kill_descendants();
      ::_exit(0);
    }
  }).detach();
}

// Nothing this worker starts outlives it (docs/reliability.md, "No process left behind"): as a
// child subreaper it inherits every orphan below it, so that a plugin's forked child, an exec
// command's setsid'ed grandchild and the like can be killed on each way out: the end of input
// and exit() (atexit), a crash (on_fatal_signal), the engine's death (the watchdog). A SIGKILL
// from the engine (timeout) reaches them through process_tree::kill_tree() there.
bool watch_over_descendants() {
  if (!process_tree::become_subreaper()) return false;
  if (std::atexit([] { process_tree::kill_descendants(); }) != 0) return false;
  if (::pipe2(parent_death_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  struct sigaction action {};
  action.sa_handler = on_parent_death;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (::sigaction(parent_death_signal(), &action, nullptr) != 0) return false;
  parent_pid = ::getppid();
  if (::prctl(PR_SET_PDEATHSIG, parent_death_signal(), 0, 0, 0) != 0) return false;
  // The engine may have died before the prctl: then the signal will never come.
  if (::getppid() != parent_pid) ::raise(parent_death_signal());
  struct sigaction stopped {};
  stopped.sa_handler = on_run_stopped;
  sigemptyset(&stopped.sa_mask);
  stopped.sa_flags = SA_RESTART;
  if (::sigaction(worker_stop_signal(), &stopped, nullptr) != 0) return false;
  if (::pthread_atfork(nullptr, nullptr, close_channel_in_child) != 0) return false;
  struct sigaction fatal {};
  fatal.sa_handler = on_fatal_signal;
  sigemptyset(&fatal.sa_mask);
  fatal.sa_flags = SA_NODEFER | SA_RESETHAND;  // a fault inside the handler is not handled again
  for (const int s : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) ::sigaction(s, &fatal, &previous_fatal[s]);
  return true;
}

// Collects what one process() call emits (Context::emit, Context::drop), as the engine's
// CallEmitter does in process.
struct ValueEmitter final : Emitter {
  explicit ValueEmitter(std::vector<Json>& out) : Emitter{&take}, values(out) {}
  void reset() noexcept {
    values.clear();
    used = false;
  }
  static void take(Emitter* self, Json* value) {
    auto& emitter = *static_cast<ValueEmitter*>(self);
    emitter.used = true;
    if (value != nullptr) emitter.values.push_back(std::move(*value));
  }
  std::vector<Json>& values;
  bool used = false;
};

int fail(const char* what) {
  std::fprintf(stderr, "coremap-worker: %s: %s\n", what, std::strerror(errno));
  return 2;
}

// In process, Engine::Impl::timed_out_message: an item that returned past its --timeout.
std::string timed_out_message(std::int64_t took_ns, std::int64_t timeout_ms) {
  char text[128];
  std::snprintf(text, sizeof text, "timed out: ran %.3f s, over --timeout %g s (its result was discarded)",
                static_cast<double>(took_ns) / 1e9, static_cast<double>(timeout_ms) / 1e3);
  return text;
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void worker_exit_called(int status) noexcept {
  if (!item_running.load(std::memory_order_relaxed) || note_page == nullptr) return;
  std::uint32_t expected = 0;
  if (!note_page->exit_called.compare_exchange_strong(expected, 1)) return;
  note_page->exit_status.store(status, std::memory_order_relaxed);
  char text[64];
  std::snprintf(text, sizeof text, "the plugin called exit(%d)", status);
  write_note(note_page, text);
  // The engine hears of it now, not when exit() has run every handler (one may hang): the
  // end of the channel, for every process holding a copy.
  if (channel_in >= 0) ::shutdown(channel_in, SHUT_RDWR);
  if (channel_out >= 0) ::close(channel_out);  // the pipe's end: no other process holds it
  channel_out = -1;
}

int worker_main(int argc, char** argv) {
  std::uint64_t memory_limit = 0;
  std::uint32_t retries = 0;
  std::int64_t timeout_ms = 0;
  int note_fd = -1;
  const char* plugin_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--memory-limit" && i + 1 < argc) {
      memory_limit = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--timeout-ms" && i + 1 < argc) {
      timeout_ms = std::strtoll(argv[++i], nullptr, 10);
    } else if (arg == "--note-fd" && i + 1 < argc) {
      note_fd = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    } else if (arg == "--retries" && i + 1 < argc) {
      retries = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (plugin_path == nullptr && !arg.starts_with("-")) {
      plugin_path = argv[i];
    } else {
      plugin_path = nullptr;
      break;
    }
  }
  if (plugin_path == nullptr) {
    std::fprintf(stderr,
                 "usage: coremap-worker [--memory-limit BYTES] [--retries N] [--timeout-ms MS] [--note-fd FD] PLUGIN.so\n"
                 "started by `coremap run --isolate`; speaks a framed protocol on standard input and output\n");
    return 2;
  }

  // The channel moves off descriptors 0 and 1, which become /dev/null and standard error: a
  // plugin that prints to standard output cannot corrupt the protocol, and programs the
  // plugin starts do not inherit the channel.
  channel_in = ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
  if (channel_in < 0) return fail("standard input");
  channel_out = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  if (channel_out < 0) return fail("standard output");
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    return fail("redirecting standard input and output");
  }
  ::close(null_fd);
  if (note_fd >= 0) {
    void* page = ::mmap(nullptr, sizeof(WorkerNote), PROT_READ | PROT_WRITE, MAP_SHARED, note_fd, 0);
    ::close(note_fd);
    if (page == MAP_FAILED) return fail("mapping the note page");
    note_page = static_cast<WorkerNote*>(page);
    stop_flag = &note_page->stop;
  }
  // The worker has a process group of its own, out of a terminal's Ctrl-C; should a SIGINT
  // reach it anyway, the engine decides what happens to its items (a stop: worker_stop_signal).
  ::signal(SIGINT, SIG_IGN);

  if (!watch_over_descendants()) return fail("setting up the clean-up of descendants");
  // Started before the memory limit applies: a limit too small for a thread's stack would
  // otherwise abort here instead of failing to load the plugin.
  start_orphan_watchdog();
  if (memory_limit != 0) {
    const rlimit limit{memory_limit, memory_limit};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) return fail("setrlimit(RLIMIT_AS)");
    std::set_new_handler(on_allocation_failure);
  }

  FrameReader in;
  FrameWriter out;
  std::optional<PluginInstance> instance;
  std::shared_ptr<const Plugin> plugin;
  Json config;
  bool sends_state = false;
  try {
    const auto setup = read_frame(channel_in, in);
    if (!setup || setup->kind != FrameKind::setup || setup->payload.empty()) throw ProtocolError("expected a setup frame");
    const auto flags = static_cast<std::uint8_t>(setup->payload[0]);
    config = Json::parse(setup->payload.substr(1));
    plugin = Plugin::load(plugin_path);
    sends_state = (flags & setup_sends_state) != 0;
    if (sends_state && !plugin->saves_state()) {
      throw PluginError("plugin " + std::string(plugin->name()) + " cannot save its partial state (save() and load())");
    }
    instance.emplace(plugin, config);
    out.begin(FrameKind::ready);
  } catch (const std::exception& e) {
    out.clear();
    out.begin(FrameKind::setup_failed);
    if (memory_limit != 0 && allocation_failed.load(std::memory_order_relaxed)) {
      out.bytes("out of memory (--memory-limit " + format_size(memory_limit) + "): ");
    }
    out.bytes(e.what());
  }
  out.end();
  if (!write_all(channel_out, out.data())) return fail("writing to the engine");
  if (!instance) return 3;

  const std::string oom_note = "out of memory (--memory-limit " + format_size(memory_limit) + "): ";
  std::string manifest_name;
  std::string record;
  RecordWriter writer(record);
  Json item;
  Json result;
  std::string error;
  std::string message;
  std::vector<Json> emitted;
  ValueEmitter emitter(emitted);
  Json state;
  std::string why;
  std::string value_text;
  WireWriter values;
  std::vector<std::uint8_t> state_bytes;
  try {
    while (const auto frame = read_frame(channel_in, in)) {
      if (frame->kind != FrameKind::batch) throw ProtocolError("expected a batch frame");
      PayloadReader payload(frame->payload);
      const BatchHeader header = decode_batch_header(payload);
      const bool values_in = (header.mode & batch_values_in) != 0;
      const bool values_out = (header.mode & batch_values_out) != 0;
      manifest_name.assign(header.manifest_name);
      for (std::uint32_t i = 0; i < header.count; ++i) {
        const WireItem wire = decode_batch_item(payload);
        allocation_failed.store(false, std::memory_order_relaxed);
        ItemOutcome outcome = ItemOutcome::error_message;
        std::string_view text;
        // Whether the plugin ran (its partial state then goes back with the outcome).
        bool called = false;
        bool parsed = true;
        if (wire.malformed) {
          message = manifest_name + ":" + std::to_string(wire.line) + ": ";
          message += wire.text;
          text = message;
          parsed = false;
        } else if (values_in) {
          // An earlier stage's value, which the engine checked was writable JSON.
          try {
            item = Json::parse(wire.text);
          } catch (const Json::exception& e) {
            throw ProtocolError(std::string("a value that is not JSON: ") + e.what());
          }
        } else if (!parse_item(wire.text, wire.line, header.format, manifest_name, item, error)) {
          text = error;
          parsed = false;
        }
        if (parsed) {
          called = true;
          // --retries: an exception is retried here; a crash is retried by the engine, which
          // then starts the item at a later attempt (wire.first_attempt).
          for (std::uint32_t attempt = wire.first_attempt;; ++attempt) {
            allocation_failed.store(false, std::memory_order_relaxed);
            const std::int64_t start = timeout_ms != 0 ? now_ns() : 0;
            emitter.reset();
            Context context(wire.index, stop_flag, timeout_ms != 0 ? start + timeout_ms * 1000000 : 0, attempt,
                            &emitter);
            error.clear();
            record.clear();
            item_running.store(true, std::memory_order_relaxed);
            bool ok = instance->process(item, context, result, error);
            item_running.store(false, std::memory_order_relaxed);
            // As in process: past its deadline, whatever it returned, the item timed out.
            if (timeout_ms != 0) {
              if (const std::int64_t took = now_ns() - start; took >= timeout_ms * 1000000) {
                ok = false;
                error = timed_out_message(took, timeout_ms);
              }
            }
            if (ok && !values_out && !emitter.used) {
              outcome = writer.ok(wire.index, result, attempt, -1, manifest_name, wire.line) ? ItemOutcome::ok_record
                                                                                               : ItemOutcome::error_record;
              text = record;
              break;
            }
            if (ok) {
              // The outputs as values, each checked as the engine checks what leaves a stage.
              outcome = ItemOutcome::values;
              values.clear();
              values.u8(emitter.used ? 1 : 0);
              const std::size_t count = emitter.used ? emitted.size() : 1;
              values.u32(static_cast<std::uint32_t>(count));
              for (std::size_t v = 0; v < count; ++v) {
                const Json& value = emitter.used ? emitted[v] : result;
                if (writable_result(value, why)) {
                  values.u8(1);
                  value_text = value.dump(-1, ' ', false, Json::error_handler_t::strict);
                  values.text(value_text);
                } else {
                  values.u8(0);
                  values.text(why);
                }
              }
              text = values.data();
              break;
            }
            if (attempt <= retries && !run_is_stopped()) {
              out.clear();
              out.begin(FrameKind::attempt);
              out.u32(attempt + 1);
              out.end();
              if (!write_all(channel_out, out.data())) {
                note_lost_channel("announcing a retry", std::strerror(errno));
                return fail("writing to the engine");
              }
              continue;
            }
            if (values_out) {
              message.clear();
              if (memory_limit != 0 && allocation_failed.load(std::memory_order_relaxed)) message += oom_note;
              message += error;
              outcome = ItemOutcome::call_error;
              text = message;
              break;
            }
            message = manifest_name + ":" + std::to_string(wire.line) + ": ";
            if (memory_limit != 0 && allocation_failed.load(std::memory_order_relaxed)) message += oom_note;
            message += error;
            if (attempt == 1) {
              text = message;
            } else {
              writer.error(wire.index, message, attempt);
              outcome = ItemOutcome::error_record;
              text = record;
            }
            break;
          }
        }
        out.clear();
        out.begin(FrameKind::result);
        out.u8(static_cast<std::uint8_t>(outcome));
        if (sends_state) {
          // What the calls since the last outcome added to the reduction, from a fresh instance
          // on: the engine merges it into the stage's state, so a later crash loses nothing of
          // an item that has its outcome.
          // u8 0: no call; 1: the state, as CBOR (every byte of its strings kept); 2: why
          // save() failed.
          if (!called) {
            out.u8(0);
          } else {
            state = Json();
            std::string save_error;
            if (!instance->save_state(state, save_error)) {
              out.u8(2);
              out.text(save_error);
            } else {
              state_bytes.clear();
              Json::to_cbor(state, state_bytes);
              out.u8(1);
              out.text(std::string_view(reinterpret_cast<const char*>(state_bytes.data()), state_bytes.size()));
            }
            instance.reset();
            try {
              instance.emplace(plugin, config);
            } catch (const std::exception& e) {
              note_lost_channel("starting a fresh instance", e.what());
              return fail("constructing the plugin again");
            }
          }
        }
        out.bytes(text);
        out.end();
        // One write per item: when the worker dies, the engine knows exactly which item it was
        // working on, and no finished item is ever run twice.
        if (!write_all(channel_out, out.data())) {
          note_lost_channel("writing the item's result", std::strerror(errno));
          return fail("writing to the engine");
        }
      }
    }
  } catch (const ProtocolError& e) {
    note_lost_channel("reading", e.what());
    std::fprintf(stderr, "coremap-worker: protocol error: %s\n", e.what());
    return 4;
  }
  return 0;
}

}  // namespace coremap::detail
