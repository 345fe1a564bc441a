// SPDX-License-Identifier: MIT
// Loading plugins: Plugin (a shared library opened with dlopen after its ELF facts were read
// with libelf: ABI, build fingerprint, sanitizers; or a class or function linked into the
// application), PluginInstance, and PluginLoader's search path.
#include <coremap/plugin_loader.hpp>

#include <dlfcn.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <system_error>
#include <utility>

#include <coremap/error.hpp>

#include "build_info.hpp"

namespace coremap {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void refuse(const fs::path& path, const std::string& reason) {
  throw PluginError("cannot load plugin '" + path.string() + "': " + reason);
}

std::string dl_error() {
  const char* message = ::dlerror();
  return message != nullptr ? message : "unknown dynamic loader error";
}

// A sanitizer whose runtime must be in the process before any instrumented library loads:
// dlopen of such a library into a process without it prints the runtime's complaint and
// exits the process (AddressSanitizer: exit 1), so it is refused before dlopen instead.
struct SanitizerRuntime {
  const char* name;          // for messages
  const char* init_symbol;   // every instrumented module refers to it; the runtime defines it
  const char* library[2];    // DT_NEEDED prefixes of its shared runtime (gcc, clang)
};

constexpr SanitizerRuntime sanitizer_runtimes[] = {
    {"AddressSanitizer", "__asan_init", {"libasan.so", "libclang_rt.asan"}},
    {"ThreadSanitizer", "__tsan_init", {"libtsan.so", "libclang_rt.tsan"}},
    {"HWAddressSanitizer", "__hwasan_init", {"libhwasan.so", "libclang_rt.hwasan"}},
    {"MemorySanitizer", "__msan_init", {"libclang_rt.msan", "libclang_rt.msan"}},
};

// What the loader needs from a library's ELF file, read without running any of its code.
struct ElfFacts {
  bool exports_entry = false;
  std::vector<std::string> needed;   // DT_NEEDED
  std::set<std::string> sanitizer_symbols;  // init symbols of sanitizer_runtimes it names
  bool has_fingerprint = false;             // exports plugin_fingerprint_symbol (COREMAP_PLUGIN)
  std::string fingerprint;                  // its text
};

// The NUL-terminated text a defined data symbol points at, read from its section's bytes in
// the file; false when it cannot be read (then the descriptor is checked after loading).
bool read_symbol_text(Elf* elf, const GElf_Sym& sym, std::string& out) {
  if (sym.st_shndx == SHN_UNDEF || sym.st_shndx >= SHN_LORESERVE || sym.st_size == 0) return false;
  Elf_Scn* section = ::elf_getscn(elf, sym.st_shndx);
  GElf_Shdr sh{};
  if (section == nullptr || ::gelf_getshdr(section, &sh) == nullptr || sh.sh_type == SHT_NOBITS) return false;
  if (sym.st_value < sh.sh_addr || sym.st_value - sh.sh_addr > sh.sh_size) return false;
  Elf_Data* data = ::elf_getdata(section, nullptr);
  if (data == nullptr || data->d_buf == nullptr) return false;
  const std::size_t offset = sym.st_value - sh.sh_addr;
  if (offset >= data->d_size) return false;
  const std::size_t limit = std::min<std::size_t>(sym.st_size, data->d_size - offset);
  const char* text = static_cast<const char*>(data->d_buf) + offset;
  const std::size_t length = ::strnlen(text, limit);
  if (length == limit) return false;  // no terminating NUL inside the symbol
  out.assign(text, length);
  return true;
}

// Reads the dynamic section and dynamic symbol table (.dynsym: what dlsym can find) with
// elfutils' libelf. Throws PluginError when the file is not an ELF shared object.
ElfFacts read_elf(const fs::path& path) {
  static std::once_flag version_once;
  static bool version_ok = false;
  std::call_once(version_once, [] { version_ok = ::elf_version(EV_CURRENT) != EV_NONE; });
  if (!version_ok) refuse(path, std::string("libelf: ") + ::elf_errmsg(-1));

  // O_NONBLOCK: a FIFO named like a library must not hang the open; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) refuse(path, std::string("cannot open: ") + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } fd_closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) refuse(path, std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) refuse(path, "not a regular file");

  Elf* elf = ::elf_begin(fd, ELF_C_READ, nullptr);
  if (elf == nullptr) refuse(path, std::string("not an ELF file (") + ::elf_errmsg(-1) + ")");
  struct ElfCloser {
    Elf* elf;
    ~ElfCloser() { ::elf_end(elf); }
  } elf_closer{elf};
  if (::elf_kind(elf) != ELF_K_ELF) refuse(path, "not an ELF file (not a shared library)");
  GElf_Ehdr header{};
  if (::gelf_getehdr(elf, &header) == nullptr) {
    refuse(path, std::string("unreadable ELF header: ") + ::elf_errmsg(-1));
  }
  if (header.e_type != ET_DYN) refuse(path, "not a shared library (ELF file of another type)");

  // Section headers sit at the end of the file: a truncated copy has none that can be read.
  std::size_t sections = 0;
  if (::elf_getshdrnum(elf, &sections) != 0) {
    refuse(path, std::string("unreadable ELF section headers (a truncated file?): ") + ::elf_errmsg(-1));
  }
  if (sections == 0) refuse(path, "no ELF section headers (truncated, or stripped of them): its symbols cannot be read");

  ElfFacts facts;
  bool saw_dynsym = false;
  for (Elf_Scn* section = ::elf_nextscn(elf, nullptr); section != nullptr; section = ::elf_nextscn(elf, section)) {
    GElf_Shdr sh{};
    if (::gelf_getshdr(section, &sh) == nullptr) continue;
    if (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_DYNAMIC) continue;
    if (sh.sh_entsize == 0) continue;
    Elf_Data* data = ::elf_getdata(section, nullptr);
    if (data == nullptr) refuse(path, std::string("unreadable ELF section: ") + ::elf_errmsg(-1));
    const std::size_t count = sh.sh_size / sh.sh_entsize;
    if (sh.sh_type == SHT_DYNAMIC) {
      for (std::size_t i = 0; i < count; ++i) {
        GElf_Dyn dyn{};
        if (::gelf_getdyn(data, static_cast<int>(i), &dyn) == nullptr || dyn.d_tag == DT_NULL) break;
        if (dyn.d_tag != DT_NEEDED) continue;
        if (const char* name = ::elf_strptr(elf, sh.sh_link, dyn.d_un.d_val)) facts.needed.emplace_back(name);
      }
      continue;
    }
    saw_dynsym = true;
    for (std::size_t i = 1; i < count; ++i) {
      GElf_Sym sym{};
      if (::gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) continue;
      const char* name = ::elf_strptr(elf, sh.sh_link, sym.st_name);
      if (name == nullptr) continue;
      if (std::strcmp(name, plugin_entry_symbol) == 0) {
        // What dlsym would return: defined here, global or weak, visible, a function.
        const unsigned bind = GELF_ST_BIND(sym.st_info);
        const unsigned visibility = GELF_ST_VISIBILITY(sym.st_other);
        if (sym.st_shndx != SHN_UNDEF && (bind == STB_GLOBAL || bind == STB_WEAK) &&
            (visibility == STV_DEFAULT || visibility == STV_PROTECTED) && GELF_ST_TYPE(sym.st_info) == STT_FUNC) {
          facts.exports_entry = true;
        }
        continue;
      }
      if (std::strcmp(name, plugin_fingerprint_symbol) == 0 && GELF_ST_TYPE(sym.st_info) == STT_OBJECT) {
        facts.has_fingerprint = read_symbol_text(elf, sym, facts.fingerprint);
        continue;
      }
      for (const auto& runtime : sanitizer_runtimes) {
        if (std::strcmp(name, runtime.init_symbol) == 0) facts.sanitizer_symbols.insert(runtime.init_symbol);
      }
    }
  }
  if (!saw_dynsym) refuse(path, "no dynamic symbol table (.dynsym section), so it exports nothing");
  return facts;
}

// The sanitizer runtimes the library needs that this process lacks, as a reason; empty when
// none. A sanitized coremap (COREMAP_SANITIZE) has the runtime, so its own sanitized plugins load.
std::string missing_sanitizer(const ElfFacts& facts) {
  for (const auto& runtime : sanitizer_runtimes) {
    std::string evidence;
    for (const auto& needed : facts.needed) {
      for (const char* prefix : runtime.library) {
        if (needed.starts_with(prefix)) evidence = "it needs " + needed;
      }
    }
    if (evidence.empty() && facts.sanitizer_symbols.count(runtime.init_symbol) != 0) {
      evidence = std::string("it refers to ") + runtime.init_symbol;
    }
    if (evidence.empty()) continue;
    if (::dlsym(RTLD_DEFAULT, runtime.init_symbol) != nullptr) continue;  // the process has it
    return std::string("the plugin is built with ") + runtime.name + " (" + evidence + "), this coremap without; " +
           runtime.name + "'s runtime must be in the process from its start, so loading the plugin would end " +
           "coremap: rebuild the plugin without the sanitizer, or use a coremap built with it (COREMAP_SANITIZE)";
  }
  return {};
}

// The fields of a build fingerprint ("key=value;..."), in order.
std::vector<std::pair<std::string, std::string>> fingerprint_fields(std::string_view text) {
  std::vector<std::pair<std::string, std::string>> fields;
  while (!text.empty()) {
    const auto semicolon = text.find(';');
    const auto field = text.substr(0, semicolon);
    const auto equals = field.find('=');
    if (equals == std::string_view::npos) return {};  // not this format (an older coremap's)
    fields.emplace_back(std::string(field.substr(0, equals)), std::string(field.substr(equals + 1)));
    if (semicolon == std::string_view::npos) break;
    text.remove_prefix(semicolon + 1);
  }
  return fields;
}

// Which settings differ, in words: "the plugin is built with _GLIBCXX_DEBUG, this coremap
// without". The sizes are named only when no named setting explains the difference.
std::string fingerprint_difference(std::string_view plugin, std::string_view own) {
  const auto theirs = fingerprint_fields(plugin);
  const auto ours = fingerprint_fields(own);
  if (theirs.empty() || ours.empty()) return {};
  std::string named, sizes;
  for (const auto& field : ours) {
    // Named, not a structured binding: clang 14 cannot capture those in the lambda.
    const std::string& key = field.first;
    const std::string& mine = field.second;
    const auto it = std::find_if(theirs.begin(), theirs.end(), [&](const auto& f) { return f.first == key; });
    const std::string value = it != theirs.end() ? it->second : "(not recorded)";
    if (value == mine) continue;
    if (key == "sizeof") {
      sizes = "the plugin's types have other sizes (" + value + ", this coremap's " + mine +
              ") from a build setting the fingerprint does not name";
      continue;
    }
    if (!named.empty()) named += "; ";
    if ((value == "0" || value == "1") && (mine == "0" || mine == "1")) {
      named += value == "1" ? "the plugin is built with " + key + ", this coremap without"
                            : "the plugin is built without " + key + ", this coremap with it";
    } else {
      named += "the plugin is built with " + key + " " + value + ", this coremap with " + mine;
    }
  }
  return named.empty() ? sizes : named;
}

[[noreturn]] void refuse_fingerprint(const fs::path& path, const std::string& theirs) {
  std::string difference = fingerprint_difference(theirs, detail::build_fingerprint);
  if (!difference.empty()) difference += " (";
  refuse(path, difference + "plugin build fingerprint '" + theirs + "', this coremap's '" + detail::build_fingerprint +
                   "'" + (difference.empty() ? "" : ")") +
                   "; the layouts of the types crossing the plugin boundary would differ: rebuild the plugin "
                   "with the same compiler, standard library, nlohmann_json and settings (docs/plugins.md)");
}

// True when the file is an ELF shared library exporting the entry symbol; never throws.
bool exports_entry(const fs::path& path) noexcept {
  try {
    return read_elf(path).exports_entry;
  } catch (...) {
    return false;
  }
}

}  // namespace

Plugin::Plugin(Private, void* handle, const PluginDescriptor* descriptor, std::string path) noexcept
    : handle_(handle), descriptor_(descriptor), path_(std::move(path)) {}

Plugin::~Plugin() {
  if (handle_ != nullptr) ::dlclose(handle_);
}

std::shared_ptr<const Plugin> Plugin::load(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) refuse(path, "no such file");
  if (fs::is_directory(status)) refuse(path, "is a directory");

  // The ELF file first, so that no code of a library that is not a coremap plugin, or that
  // would end the process as it loads, ever runs (dlopen runs a library's constructors).
  const ElfFacts facts = read_elf(path);
  if (!facts.exports_entry) {
    refuse(path, std::string("not a coremap plugin: it does not export '") + plugin_entry_symbol +
                     "' (register the plugin class with COREMAP_PLUGIN)");
  }
  if (const std::string reason = missing_sanitizer(facts); !reason.empty()) refuse(path, reason);
  // The fingerprint from the file when COREMAP_PLUGIN exported it: a plugin built with other
  // layouts is refused before any of its code runs. The descriptor's copy is checked below too.
  if (facts.has_fingerprint && facts.fingerprint != detail::build_fingerprint) refuse_fingerprint(path, facts.fingerprint);

  // RTLD_NOW: an unresolved symbol fails here, with the loader's message, not at the first
  // call in the middle of a run. RTLD_LOCAL: two plugins' symbols never interpose.
  ::dlerror();
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) refuse(path, dl_error());

  struct Closer {
    void* handle;
    ~Closer() {
      if (handle != nullptr) ::dlclose(handle);
    }
  } closer{handle};

  void* symbol = ::dlsym(handle, plugin_entry_symbol);
  if (symbol == nullptr) {
    refuse(path, std::string("not a coremap plugin: it does not export '") + plugin_entry_symbol +
                     "' (register the plugin class with COREMAP_PLUGIN)");
  }
  const auto entry = reinterpret_cast<PluginEntry>(symbol);
  const PluginDescriptor* descriptor = entry();
  if (descriptor == nullptr) refuse(path, std::string(plugin_entry_symbol) + " returned no descriptor");
  // The ABI version is the only field read before it is known to match.
  if (descriptor->abi_version != plugin_abi_version) {
    refuse(path, "built for plugin ABI " + std::to_string(descriptor->abi_version) +
                     ", this coremap uses ABI " + std::to_string(plugin_abi_version) +
                     "; rebuild the plugin against this coremap");
  }
  if (descriptor->fingerprint == nullptr ||
      std::strcmp(descriptor->fingerprint, detail::build_fingerprint) != 0) {
    refuse_fingerprint(path, descriptor->fingerprint != nullptr ? descriptor->fingerprint : "(none)");
  }
  if (descriptor->name == nullptr || descriptor->version == nullptr ||
      descriptor->description == nullptr || descriptor->create == nullptr ||
      descriptor->destroy == nullptr || descriptor->process == nullptr ||
      (descriptor->config_key_count > 0 && descriptor->config_keys == nullptr)) {
    refuse(path, "its descriptor is incomplete");
  }
  closer.handle = nullptr;
  return std::make_shared<const Plugin>(Private{}, handle, descriptor, path.string());
}

std::shared_ptr<const Plugin> Plugin::from_descriptor(const PluginDescriptor* descriptor,
                                                      std::string origin) {
  if (descriptor == nullptr || descriptor->abi_version != plugin_abi_version) {
    throw PluginError("plugin '" + origin + "': descriptor missing or of another ABI");
  }
  return std::make_shared<const Plugin>(Private{}, nullptr, descriptor, std::move(origin));
}

std::shared_ptr<const Plugin> Plugin::from_class_descriptor(const PluginDescriptor& of_class, std::string name,
                                                            std::string version, std::string description) {
  if (name.empty()) throw UsageError("Plugin::from_class: the plugin needs a name");
  // The descriptor and the strings it points to, in one block that lives as long as the plugin.
  struct Owned {
    std::string name, version, description;
    PluginDescriptor descriptor;
  };
  auto owned = std::make_shared<Owned>(Owned{std::move(name), std::move(version), std::move(description), of_class});
  owned->descriptor.name = owned->name.c_str();
  owned->descriptor.version = owned->version.c_str();
  owned->descriptor.description = owned->description.c_str();
  std::shared_ptr<PluginDescriptor> descriptor(owned, &owned->descriptor);
  auto plugin = std::make_shared<Plugin>(Private{}, nullptr, descriptor.get(), "builtin:" + owned->name);
  plugin->function_descriptor_ = std::move(descriptor);
  return plugin;
}

namespace {

using Function = std::function<Json(const Json&, Context&)>;

bool call_function(void* self, const Json* item, Context* context, Json* result, std::string* error) noexcept {
  try {
    *result = (*static_cast<Function*>(self))(*item, *context);
    return true;
  } catch (...) {
    detail::describe_current_exception(*error);
    return false;
  }
}

void* no_create(const Json*, std::string*) noexcept { return nullptr; }
void no_destroy(void*) noexcept {}

}  // namespace

std::vector<std::string> Plugin::input_file_fields() const {
  std::vector<std::string> fields;
  if ((descriptor_->flags & plugin_declares_input_files) == 0 || descriptor_->input_file_fields == nullptr) return fields;
  for (std::size_t i = 0; i < descriptor_->input_file_field_count; ++i) {
    const char* field = descriptor_->input_file_fields[i];
    if (field != nullptr && field[0] != '\0') fields.emplace_back(field);
  }
  return fields;
}

std::shared_ptr<const Plugin> Plugin::from_function(Function function, std::string name) {
  if (!function) throw PluginError("plugin '" + name + "': empty function");
  auto fn = std::make_shared<Function>(std::move(function));
  auto owned_name = std::make_shared<std::string>(std::move(name));
  // The descriptor's strings must outlive it: keep the name alive through the deleter.
  auto descriptor = std::shared_ptr<PluginDescriptor>(
      new PluginDescriptor{plugin_abi_version, plugin_reentrant | plugin_declares_config, owned_name->c_str(),
                           "", "a function run directly by the engine", detail::build_fingerprint, nullptr, 0,
                           &no_create, &no_destroy, &call_function, nullptr, nullptr, nullptr, nullptr, nullptr, 0},
      [owned_name](PluginDescriptor* d) { delete d; });
  auto plugin = std::make_shared<Plugin>(Private{}, nullptr, descriptor.get(), "function:" + *owned_name);
  plugin->function_ = std::move(fn);
  plugin->function_descriptor_ = std::move(descriptor);
  return plugin;
}

PluginInstance::PluginInstance(std::shared_ptr<const Plugin> plugin, const Json& resolved_config)
    : plugin_(std::move(plugin)), descriptor_(&plugin_->descriptor()), self_(nullptr) {
  if (plugin_->function_) {
    self_ = plugin_->function_.get();
    return;
  }
  std::string error;
  self_ = descriptor_->create(&resolved_config, &error);
  if (self_ == nullptr) {
    throw PluginError("plugin '" + std::string(plugin_->name()) + "' (" + plugin_->path() +
                      "): constructor failed: " + (error.empty() ? "no message" : error));
  }
}

PluginInstance::~PluginInstance() {
  if (self_ != nullptr) descriptor_->destroy(self_);
}

PluginLoader::PluginLoader(std::vector<fs::path> extra_dirs, bool use_environment, bool use_bundled)
    : dirs_(std::move(extra_dirs)) {
  if (use_environment) {
    if (const char* env = std::getenv("COREMAP_PLUGIN_PATH"); env != nullptr) {
      std::string_view rest(env);
      while (!rest.empty()) {
        const auto colon = rest.find(':');
        const auto dir = rest.substr(0, colon);
        if (!dir.empty()) dirs_.emplace_back(dir);
        if (colon == std::string_view::npos) break;
        rest.remove_prefix(colon + 1);
      }
    }
  }
  if (use_bundled) {
    if (auto bundled = bundled_directory(); !bundled.empty()) dirs_.push_back(std::move(bundled));
  }
}

fs::path PluginLoader::bundled_directory() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&PluginLoader::bundled_directory), &info) == 0 ||
      info.dli_fname == nullptr) {
    return {};
  }
  std::error_code ec;
  fs::path lib = fs::canonical(info.dli_fname, ec);
  if (ec) lib = info.dli_fname;
  return (lib.parent_path() / COREMAP_PLUGIN_DIR_FROM_LIB).lexically_normal();
}

fs::path PluginLoader::find(std::string_view name_or_path) const {
  if (name_or_path.empty()) throw PluginError("empty plugin name");
  if (name_or_path.find('/') != std::string_view::npos) return fs::path(name_or_path);
  std::string file(name_or_path);
  if (!file.ends_with(".so")) file += ".so";
  std::string searched;
  // A file of that name that is not a coremap plugin (another library on the path) does not
  // hide a plugin further on; when no file of that name is a plugin, the first one is returned,
  // so that load() says why it is not one.
  fs::path first;
  for (const auto& dir : dirs_) {
    fs::path candidate = dir / file;
    std::error_code ec;
    searched += "\n  " + dir.string();
    if (!fs::is_regular_file(candidate, ec)) continue;
    if (exports_entry(candidate)) return candidate;
    if (first.empty()) first = std::move(candidate);
  }
  if (!first.empty()) return first;
  throw PluginError("plugin '" + std::string(name_or_path) + "' not found (looked for " + file +
                    " in:" + (searched.empty() ? std::string(" no directories") : searched) +
                    ")\nuse --plugin-path DIR, set COREMAP_PLUGIN_PATH, or give the path to the .so");
}

std::shared_ptr<const Plugin> PluginLoader::load(std::string_view name_or_path) const {
  return Plugin::load(find(name_or_path));
}

std::vector<PluginListing> PluginLoader::list() const {
  std::vector<PluginListing> listings;
  std::set<std::string> seen, seen_other;  // names of plugins listed, of other files listed
  for (const auto& dir : dirs_) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".so" && it->is_regular_file(ec)) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (auto& file : files) {
      // The first plugin of each name, as find() resolves it (a non-plugin of a name that
      // also has a plugin is dropped below).
      const std::string name = file.filename().string();
      if (seen.count(name) != 0) continue;
      PluginListing listing{file, nullptr, {}, false};
      // Only a file that exports the entry symbol is loaded: the search path may hold other
      // libraries (COREMAP_PLUGIN_PATH=/usr/lib/...), whose constructors must not run.
      bool has_entry = false;
      try {
        has_entry = read_elf(file).exports_entry;
        if (!has_entry) {
          listing.error = "cannot load plugin '" + file.string() + "': not a coremap plugin: it does not export '" +
                          plugin_entry_symbol + "'";
        }
      } catch (const Error& e) {
        listing.error = e.what();  // not an ELF shared library at all
      }
      if (has_entry) {
        seen.insert(name);
        listing.is_plugin = true;
        try {
          listing.plugin = Plugin::load(file);
        } catch (const Error& e) {
          listing.error = e.what();
        }
      }
      if (!listing.is_plugin && !seen_other.insert(name).second) continue;  // each name once
      listings.push_back(std::move(listing));
    }
  }
  std::erase_if(listings, [&](const PluginListing& l) {
    return !l.is_plugin && seen.count(l.path.filename().string()) != 0;
  });
  return listings;
}

}  // namespace coremap
