// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// The one header a plugin author includes. A plugin is a class with a constructor taking its
/// JSON config and a `process(item)` returning a JSON result, registered with COREMAP_PLUGIN:
///
/// \code
/// #include <coremap/plugin.hpp>
///
/// class Upper {
///  public:
///   static constexpr coremap::ConfigKey config_keys[] = {
///       {"field", "string", "\"name\"", "item field to upper-case"}};
///   explicit Upper(const coremap::Json& config) : field_(config.at("field")) {}
///   coremap::Json process(const coremap::Json& item) {
///     std::string s = item.at(field_);
///     for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
///     return {{field_, s}};
///   }
///  private:
///   std::string field_;
/// };
///
/// COREMAP_PLUGIN(Upper, "upper", "1.0.0", "upper-cases one field of each item")
/// \endcode
///
/// Thread safety: unless the class declares `static constexpr bool reentrant = true;`, the
/// engine never calls `process()` on one instance from two threads at once (it keeps one
/// instance per thread), so plugin code can be plain serial code.
///
/// A plugin whose result is not determined by its item, config and input file (it reads the
/// clock, draws random numbers, asks the network) declares `static constexpr bool cacheable =
/// false;`: the result cache (`--cache`, docs/cache.md) then stores nothing of it or of any
/// stage after it.
///
/// A plugin that reads files named by item fields other than `path` lists those fields, so
/// that the result cache keys each item on those files too (`--cache-files stat|size|content`
/// applies to them as to `path`; a field that is missing or not a string adds nothing):
///
/// \code
///   static constexpr const char* input_files[] = {"reference", "mask"};
/// \endcode

#if !defined(__cplusplus) || __cplusplus < 202002L
#error "coremap needs C++20: compile with -std=c++20 (coremap_add_plugin, coremap::plugin_api and coremap::coremap and pkg-config --cflags coremap set it)"
#endif

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <cxxabi.h>

#include <nlohmann/json.hpp>

namespace coremap {

/// The JSON value type of items, configs and results.
using Json = nlohmann::json;

/// Version of the binary interface between the framework and a plugin library. The loader
/// refuses a library built for another one.
inline constexpr std::uint32_t plugin_abi_version = 2;

/// Name of the C-linkage function every plugin library exports (emitted by COREMAP_PLUGIN).
inline constexpr const char* plugin_entry_symbol = "coremap_plugin_entry";

/// Name of the C-linkage constant holding detail::build_fingerprint's text that COREMAP_PLUGIN
/// exports too, so the loader can compare fingerprints from the ELF file before it loads the
/// library (a library without it is checked through its descriptor after loading).
inline constexpr const char* plugin_fingerprint_symbol = "coremap_plugin_fingerprint";

/// One configuration key a plugin declares: the framework validates `--config` against the
/// declared keys (unknown key, wrong type) and fills in defaults before the constructor runs.
struct ConfigKey {
  const char* name;          ///< key in the config object
  const char* type;          ///< "integer", "number", "string", "boolean", "array", "object" or "any"
  const char* default_json;  ///< JSON text of the default value; nullptr when the key is required
  const char* description;   ///< one line for `coremap info`
};

/// Where the outputs of a `process()` call that emits go (the engine's side of Context::emit).
struct Emitter {
  /// Takes one output (moved from *value), or, for value == nullptr, notes that the call
  /// emits (so zero emitted values mean zero outputs).
  void (*emit)(Emitter* self, Json* value);
};

/// What `process()` may ask the engine about the item it is working on.
///
/// Thread safety: a Context belongs to one call of `process()`; do not keep it afterwards.
class Context {
 public:
  /// Made by the engine; plugins only receive it. `deadline_ns` is a std::chrono::steady_clock
  /// time since its epoch in nanoseconds (0: no deadline); `attempt` is 1-based.
  Context(std::uint64_t index, const std::atomic<bool>* cancel, std::int64_t deadline_ns = 0,
          std::uint32_t attempt = 1, Emitter* emitter = nullptr) noexcept
      : index_(index), cancel_(cancel), deadline_ns_(deadline_ns), attempt_(attempt), emitter_(emitter) {}

  /// 0-based position of the item among the manifest's items.
  std::uint64_t index() const noexcept { return index_; }

  /// True once this item should stop: the run is being stopped (an interrupt, `--max-errors`
  /// reached, or the embedding app cancelled it) or the item is past its `--timeout`. A long
  /// `process()` polls this and returns (or throws) early; its result is then discarded.
  bool cancelled() const noexcept {
    return (cancel_ != nullptr && cancel_->load(std::memory_order_relaxed)) || timed_out();
  }

  /// True once the item has run longer than `--timeout`. The engine records such an item as
  /// timed out when `process()` returns, whatever it returned; no thread is ever killed.
  bool timed_out() const noexcept {
    return deadline_ns_ != 0 &&
           std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
                   .count() >= deadline_ns_;
  }

  /// Which attempt at this item this is: 1, then 2, 3, ... when `--retries` reruns a failure.
  std::uint32_t attempt() const noexcept { return attempt_; }

  /// Fan-out: makes `value` one output of this call (the next stage's input, or a record of
  /// the last stage). A call that emits has exactly the values it emitted as outputs, in order,
  /// and its return value is ignored. Throws std::logic_error where outputs cannot fan out
  /// (Engine::map and coremap::map over items in memory).
  void emit(Json value) {
    if (emitter_ == nullptr) throw std::logic_error("Context::emit: not available in a map over items in memory (one result per item)");
    emitter_->emit(emitter_, &value);
  }

  /// Filtering: this call has no output unless it also emits (its return value is ignored).
  void drop() {
    if (emitter_ == nullptr) throw std::logic_error("Context::drop: not available in a map over items in memory (one result per item)");
    emitter_->emit(emitter_, nullptr);
  }

 private:
  std::uint64_t index_;
  const std::atomic<bool>* cancel_;
  std::int64_t deadline_ns_;
  std::uint32_t attempt_;
  Emitter* emitter_;
};

/// Bits of PluginDescriptor::flags.
enum PluginFlags : std::uint32_t {
  plugin_reentrant = 1u << 0,        ///< one instance may run `process()` on many threads
  plugin_declares_config = 1u << 1,  ///< config_keys is the complete list of accepted keys
  plugin_reduces = 1u << 2,          ///< merge and summary are set: the plugin aggregates
  plugin_saves_state = 1u << 3,      ///< save_state and load_state are set: partial states cross processes
  /// The plugin's outputs are not a function of its item, config and input file (time,
  /// randomness, the network): the result cache (--cache) never stores them. Declared with
  /// `static constexpr bool cacheable = false;` in the class.
  plugin_not_cacheable = 1u << 4,
  /// input_file_fields and input_file_field_count are set: the item fields (besides `path`)
  /// that name files the plugin reads. Declared with `static constexpr const char*
  /// input_files[] = {...};` in the class.
  plugin_declares_input_files = 1u << 5,
};

/// What a plugin library's entry symbol returns. Layout is part of the ABI: `abi_version`
/// stays the first member forever so the loader can read it before anything else.
struct PluginDescriptor {
  std::uint32_t abi_version;
  std::uint32_t flags;
  const char* name;
  const char* version;
  const char* description;
  const char* fingerprint;  ///< detail::build_fingerprint of the plugin's build: the settings that change layouts
  const ConfigKey* config_keys;
  std::size_t config_key_count;
  /// Returns a new instance, or nullptr with the constructor's message in *error.
  void* (*create)(const Json* config, std::string* error) noexcept;
  void (*destroy)(void* instance) noexcept;
  /// Runs `process()`; on an exception returns false with its description in *error.
  bool (*process)(void* instance, const Json* item, Context* context, Json* result,
                  std::string* error) noexcept;
  /// Reductions (null unless plugin_reduces): folds the partial state of instance `from` into
  /// `into`; writes the final aggregate of an instance. False with the message in *error when
  /// they throw.
  bool (*merge)(void* into, void* from, std::string* error) noexcept;
  bool (*summary)(void* instance, Json* out, std::string* error) noexcept;
  /// Partial states across processes (MPI runs; null unless plugin_saves_state, and read only
  /// when that flag is set, so plugins built before these members existed stay valid): writes
  /// an instance's partial state as JSON; loads such a state into a fresh instance, which then
  /// merges like any other.
  bool (*save_state)(void* instance, Json* out, std::string* error) noexcept;
  bool (*load_state)(void* instance, const Json* state, std::string* error) noexcept;
  /// The item fields, besides `path`, that name files the plugin reads (the result cache keys
  /// items on those files). Read only when plugin_declares_input_files is set, so plugins built
  /// before these members existed stay valid.
  const char* const* input_file_fields;
  std::size_t input_file_field_count;
};

/// Signature of the entry symbol.
using PluginEntry = const PluginDescriptor* (*)() noexcept;

namespace detail {

#define COREMAP_DETAIL_STR2(x) #x
#define COREMAP_DETAIL_STR(x) COREMAP_DETAIL_STR2(x)

#if defined(__clang__)
#define COREMAP_DETAIL_COMPILER "clang-" COREMAP_DETAIL_STR(__clang_major__)
#elif defined(__GNUC__)
#define COREMAP_DETAIL_COMPILER "gcc-" COREMAP_DETAIL_STR(__GNUC__)
#else
#define COREMAP_DETAIL_COMPILER "unknown-compiler"
#endif

#if defined(_LIBCPP_VERSION)
#define COREMAP_DETAIL_STDLIB "stdlib=libc++-" COREMAP_DETAIL_STR(_LIBCPP_VERSION) ";_LIBCPP_ABI_VERSION=" COREMAP_DETAIL_STR(_LIBCPP_ABI_VERSION)
#elif defined(_GLIBCXX_RELEASE)
#define COREMAP_DETAIL_STDLIB \
  "stdlib=libstdc++-" COREMAP_DETAIL_STR(_GLIBCXX_RELEASE) ";_GLIBCXX_USE_CXX11_ABI=" COREMAP_DETAIL_STR(_GLIBCXX_USE_CXX11_ABI)
#else
#define COREMAP_DETAIL_STDLIB "stdlib=unknown"
#endif

// Debug mode swaps std::vector and std::map (nlohmann's array and object) for checked
// containers with extra members.
#if defined(_GLIBCXX_DEBUG)
#define COREMAP_DETAIL_GLIBCXX_DEBUG "1"
#else
#define COREMAP_DETAIL_GLIBCXX_DEBUG "0"
#endif

// Adds a parent pointer to every nlohmann value (3.11 defines it to 0 when unset).
#if defined(JSON_DIAGNOSTICS) && JSON_DIAGNOSTICS
#define COREMAP_DETAIL_JSON_DIAGNOSTICS "1"
#else
#define COREMAP_DETAIL_JSON_DIAGNOSTICS "0"
#endif

// Adds start and end offsets to every nlohmann value (nlohmann_json 3.12 and later).
#if defined(JSON_DIAGNOSTIC_POSITIONS) && JSON_DIAGNOSTIC_POSITIONS
#define COREMAP_DETAIL_JSON_DIAGNOSTIC_POSITIONS "1"
#else
#define COREMAP_DETAIL_JSON_DIAGNOSTIC_POSITIONS "0"
#endif

/// The build fingerprint as text, built at compile time (see build_fingerprint). COREMAP_PLUGIN
/// exports one as `coremap_plugin_fingerprint`; the loader reads the NUL-terminated `text` at
/// the symbol's address, so `text` stays the first member.
struct FingerprintText {
  char text[384]{};
  std::size_t size = 0;
  constexpr void append(const char* s) {
    while (*s != '\0') text[size++] = *s++;
  }
  constexpr void append(std::size_t n) {
    char digits[24]{};
    std::size_t count = 0;
    do {
      digits[count++] = static_cast<char>('0' + n % 10);
      n /= 10;
    } while (n != 0);
    while (count != 0) text[size++] = digits[--count];
  }
};

constexpr FingerprintText make_build_fingerprint() {
  FingerprintText f;
  f.append("compiler=" COREMAP_DETAIL_COMPILER ";" COREMAP_DETAIL_STDLIB
           ";_GLIBCXX_DEBUG=" COREMAP_DETAIL_GLIBCXX_DEBUG
           ";nlohmann_json=" COREMAP_DETAIL_STR(NLOHMANN_JSON_VERSION_MAJOR) "." COREMAP_DETAIL_STR(
               NLOHMANN_JSON_VERSION_MINOR) "." COREMAP_DETAIL_STR(NLOHMANN_JSON_VERSION_PATCH)
           ";JSON_DIAGNOSTICS=" COREMAP_DETAIL_JSON_DIAGNOSTICS
           ";JSON_DIAGNOSTIC_POSITIONS=" COREMAP_DETAIL_JSON_DIAGNOSTIC_POSITIONS ";sizeof=json:");
  // The sizes catch a layout change from a setting the list above does not name.
  f.append(sizeof(Json));
  f.append(",string:");
  f.append(sizeof(Json::string_t));
  f.append(",array:");
  f.append(sizeof(Json::array_t));
  f.append(",object:");
  f.append(sizeof(Json::object_t));
  f.append(",binary:");
  f.append(sizeof(Json::binary_t));
  return f;
}

inline constexpr FingerprintText build_fingerprint_text = make_build_fingerprint();

/// Every build setting that changes the layout of a type crossing the plugin boundary (Json
/// and the std::string, std::vector and std::map inside it, std::string for messages), as
/// `key=value` fields separated by ';': compiler and its major version, standard library
/// (release and ABI: _GLIBCXX_USE_CXX11_ABI or _LIBCPP_ABI_VERSION), _GLIBCXX_DEBUG,
/// nlohmann_json's version, JSON_DIAGNOSTICS, JSON_DIAGNOSTIC_POSITIONS, and the sizes of
/// those types. Settings that change no layout are left out on purpose: _GLIBCXX_ASSERTIONS,
/// JSON_USE_IMPLICIT_CONVERSIONS, JSON_NOEXCEPTION, JSON_USE_LEGACY_DISCARDED_VALUE_COMPARISON,
/// optimisation and -std. Sanitizers change no layout either; the loader checks the runtime a
/// sanitized plugin needs separately (docs/plugins.md). Compiled into both sides; the loader
/// compares the plugin's copy with its own, field by field.
inline constexpr const char* build_fingerprint = build_fingerprint_text.text;

/// Describes the exception in flight; called only inside a catch block.
inline void describe_current_exception(std::string& out) noexcept {
  try {
    throw;
  } catch (const std::exception& e) {
    try {
      out = e.what();
    } catch (...) {
    }
  } catch (...) {
    try {
      const std::type_info* type = abi::__cxa_current_exception_type();
      std::string name = type != nullptr ? type->name() : "?";
      int status = 0;
      std::unique_ptr<char, decltype(&std::free)> demangled(
          abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status), &std::free);
      if (status == 0 && demangled) name = demangled.get();
      out = "exception of type '" + name + "' (not derived from std::exception)";
    } catch (...) {
    }
  }
}

template <class P>
concept ProcessWithContext = requires(P& p, const Json& item, Context& ctx) {
  { p.process(item, ctx) } -> std::convertible_to<Json>;
};

template <class P>
concept ProcessItemOnly = requires(P& p, const Json& item) {
  { p.process(item) } -> std::convertible_to<Json>;
};

template <class P>
void* create_instance(const Json* config, std::string* error) noexcept {
  try {
    if constexpr (std::is_constructible_v<P, const Json&>) {
      return new P(*config);
    } else {
      static_assert(std::is_default_constructible_v<P>,
                    "a coremap plugin needs a constructor taking (const coremap::Json& config)");
      return new P();
    }
  } catch (...) {
    describe_current_exception(*error);
    return nullptr;
  }
}

template <class P>
void destroy_instance(void* instance) noexcept {
  delete static_cast<P*>(instance);
}

template <class P>
bool process_item(void* instance, const Json* item, Context* context, Json* result,
                  std::string* error) noexcept {
  try {
    P& self = *static_cast<P*>(instance);
    if constexpr (ProcessWithContext<P>) {
      *result = self.process(*item, *context);
    } else {
      static_assert(ProcessItemOnly<P>,
                    "a coremap plugin needs Json process(const Json& item) or "
                    "Json process(const Json& item, coremap::Context& context)");
      *result = self.process(*item);
    }
    return true;
  } catch (...) {
    describe_current_exception(*error);
    return false;
  }
}

template <class P>
concept Reduces = requires(P& p, P& other) {
  { p.merge(other) };
  { p.summary() } -> std::convertible_to<Json>;
};

template <class P>
concept SavesState = Reduces<P> && requires(P& p, const Json& state) {
  { p.save() } -> std::convertible_to<Json>;
  { p.load(state) };
};

// Runs `call`; an exception becomes false with its description in *error.
template <class F>
bool guarded(std::string* error, F&& call) noexcept {
  try {
    call();
    return true;
  } catch (...) {
    describe_current_exception(*error);
    return false;
  }
}

template <class P>
bool save_instance(void* instance, Json* out, std::string* error) noexcept {
  return guarded(error, [&] {
    if constexpr (SavesState<P>) *out = static_cast<P*>(instance)->save();
  });
}

template <class P>
bool load_instance(void* instance, const Json* state, std::string* error) noexcept {
  return guarded(error, [&] {
    if constexpr (SavesState<P>) static_cast<P*>(instance)->load(*state);
  });
}

template <class P>
bool merge_instances(void* into, void* from, std::string* error) noexcept {
  return guarded(error, [&] {
    if constexpr (Reduces<P>) static_cast<P*>(into)->merge(*static_cast<P*>(from));
  });
}

template <class P>
bool summarize_instance(void* instance, Json* out, std::string* error) noexcept {
  return guarded(error, [&] {
    if constexpr (Reduces<P>) *out = static_cast<P*>(instance)->summary();
  });
}

template <class P>
constexpr std::uint32_t flags_of() noexcept {
  std::uint32_t flags = 0;
  if constexpr (requires { P::reentrant; }) {
    if (P::reentrant) flags |= plugin_reentrant;
  }
  if constexpr (requires { P::config_keys; }) flags |= plugin_declares_config;
  if constexpr (Reduces<P>) flags |= plugin_reduces;
  if constexpr (SavesState<P>) flags |= plugin_saves_state;
  if constexpr (requires { P::cacheable; }) {
    if (!P::cacheable) flags |= plugin_not_cacheable;
  }
  if constexpr (requires { P::input_files; }) flags |= plugin_declares_input_files;
  return flags;
}

template <class P>
constexpr const char* const* input_files_of() noexcept {
  if constexpr (requires { P::input_files; }) {
    return std::data(P::input_files);
  } else {
    return nullptr;
  }
}

template <class P>
constexpr std::size_t input_file_count_of() noexcept {
  if constexpr (requires { P::input_files; }) {
    return std::size(P::input_files);
  } else {
    return 0;
  }
}

template <class P>
constexpr const ConfigKey* config_keys_of() noexcept {
  if constexpr (requires { P::config_keys; }) {
    return std::data(P::config_keys);
  } else {
    return nullptr;
  }
}

template <class P>
constexpr std::size_t config_key_count_of() noexcept {
  if constexpr (requires { P::config_keys; }) {
    return std::size(P::config_keys);
  } else {
    return 0;
  }
}

/// The descriptor of plugin class P under `name`, `version` and `description`, which it points
/// to (they must outlive it: string literals in COREMAP_PLUGIN). Each call makes its own, with
/// the strings it was given: nothing is kept per class, so registering one class twice under
/// two names gives two names. COREMAP_PLUGIN keeps one in a static of the entry function;
/// Plugin::from_class copies one with the strings it owns.
template <class P>
constexpr PluginDescriptor descriptor_of(const char* name, const char* version,
                                         const char* description) noexcept {
  return PluginDescriptor{plugin_abi_version,       flags_of<P>(),       name,
                          version,                  description,         build_fingerprint,
                          config_keys_of<P>(),      config_key_count_of<P>(), &create_instance<P>,
                          &destroy_instance<P>,     &process_item<P>,    Reduces<P> ? &merge_instances<P> : nullptr,
                          Reduces<P> ? &summarize_instance<P> : nullptr,
                          SavesState<P> ? &save_instance<P> : nullptr,
                          SavesState<P> ? &load_instance<P> : nullptr,
                          input_files_of<P>(),      input_file_count_of<P>()};
}

}  // namespace detail
}  // namespace coremap

/// Registers plugin class `Class` under `name`; write it once, at namespace scope, in the
/// plugin's source file. Emits the library's only exported symbols: the entry function
/// `coremap_plugin_entry` and the constant `coremap_plugin_fingerprint` (the build fingerprint,
/// read from the file before it is loaded).
#define COREMAP_PLUGIN(Class, name, version, description)                                   \
  extern "C" __attribute__((visibility("default"))) const ::coremap::detail::FingerprintText \
      coremap_plugin_fingerprint = ::coremap::detail::build_fingerprint_text;                \
  extern "C" __attribute__((visibility("default"))) const ::coremap::PluginDescriptor*     \
  coremap_plugin_entry() noexcept {                                                         \
    static const ::coremap::PluginDescriptor descriptor =                                   \
        ::coremap::detail::descriptor_of<Class>(name, version, description);                \
    return &descriptor;                                                                     \
  }
