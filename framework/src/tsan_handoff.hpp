// SPDX-License-Identifier: MIT
#pragma once

// ThreadSanitizer sees only instrumented code, and Debian's libtbb is not: a task spawned on one
// thread and run on another, or a message passed through a flow graph, carries no
// happens-before edge TSan knows of, so every access on either side looks like a race. These
// two calls state the edge at the points where the engine hands data to TBB and where it gets
// it back, keyed by an address (a batch, a node, a run). Without TSan they compile to nothing.
#if defined(__SANITIZE_THREAD__)
#define COREMAP_TSAN_ACTIVE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define COREMAP_TSAN_ACTIVE 1
#endif
#endif

#if defined(COREMAP_TSAN_ACTIVE)
#include <sanitizer/tsan_interface.h>
#endif

namespace coremap::detail {

// Everything this thread did so far happens before whatever follows a later `taken_over(key)`.
inline void handed_over([[maybe_unused]] const void* key) noexcept {
#if defined(COREMAP_TSAN_ACTIVE)
  __tsan_release(const_cast<void*>(key));
#endif
}

// Whatever preceded every earlier `handed_over(key)` happens before what this thread does next.
inline void taken_over([[maybe_unused]] const void* key) noexcept {
#if defined(COREMAP_TSAN_ACTIVE)
  __tsan_acquire(const_cast<void*>(key));
#endif
}

// Keys for a run's setup and its end. Process-wide, not per engine: a body must take the setup
// over before it reads anything of its own closure, which TBB's threads share with the thread that
// built it.
inline char run_start_key = 0;
inline char run_end_key = 0;

// Marks one body TBB runs: it sees its input and the run's setup, and what it did is seen by
// the next holder of its input and by the run's end. The run's start and end are two keys so
// that bodies get no edge between each other from them.
class TbbBody {
 public:
  TbbBody() noexcept : TbbBody(&run_start_key) {}
  explicit TbbBody(const void* input) noexcept : input_(input) {
    taken_over(&run_start_key);
    taken_over(input);
  }
  ~TbbBody() {
    handed_over(input_);
    handed_over(&run_end_key);
  }
  TbbBody(const TbbBody&) = delete;
  TbbBody& operator=(const TbbBody&) = delete;

 private:
  const void* input_;
};

// Marks the calls of a serial node, which pass its state (`key`) from one call to the next.
// Declared after the call's TbbBody: reading `key` from the body's closure needs the run's setup.
class SerialBody {
 public:
  explicit SerialBody(const void* key) noexcept : key_(key) { taken_over(key); }
  ~SerialBody() { handed_over(key_); }
  SerialBody(const SerialBody&) = delete;
  SerialBody& operator=(const SerialBody&) = delete;

 private:
  const void* key_;
};

}  // namespace coremap::detail
