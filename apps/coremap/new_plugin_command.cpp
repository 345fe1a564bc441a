// SPDX-License-Identifier: MIT
#include <cctype>
#include <cstdio>
#include <fstream>
#include <regex>

#include "commands.hpp"

namespace coremap::cli {
namespace {

// Replaces every @NAME@ and @CLASS@ in a template.
std::string fill(std::string text, const std::string& name, const std::string& class_name) {
  for (const auto& [key, value] : {std::pair{std::string("@NAME@"), name}, std::pair{std::string("@CLASS@"), class_name}}) {
    for (std::size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size())) {
      text.replace(at, key.size(), value);
    }
  }
  return text;
}

constexpr const char* cmake_template = R"(cmake_minimum_required(VERSION 3.25)
project(@NAME@ LANGUAGES CXX)

# Optimised unless you choose another build type (-DCMAKE_BUILD_TYPE=Debug, say).
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

# coremap's CMake package: found by itself under /usr or /usr/local; otherwise add
# -Dcoremap_DIR=<prefix>/lib/cmake/coremap (an installed coremap) or -Dcoremap_DIR=<build>
# (coremap's build tree).
find_package(coremap 0.1 CONFIG REQUIRED)

# Builds @NAME@.so: a coremap plugin (no "lib" prefix, only the symbols of COREMAP_PLUGIN exported).
coremap_add_plugin(@NAME@ SOURCES @NAME@.cpp)
)";

constexpr const char* source_template = R"(// @NAME@: a coremap plugin. `coremap info build/@NAME@.so` lists its config keys.
#include <cctype>
#include <string>

#include <coremap/plugin.hpp>

class @CLASS@ {
 public:
  // Declared config keys: coremap rejects unknown keys and wrong types and fills in defaults.
  static constexpr coremap::ConfigKey config_keys[] = {
      {"greeting", "string", "\"hello\"", "word to greet each item's name with"},
      {"shout", "boolean", "false", "upper-case the message"}};

  explicit @CLASS@(const coremap::Json& config)
      : greeting_(config.at("greeting")), shout_(config.at("shout")) {}

  // Called once per item; never on one instance from two threads at once. Throw to make this
  // item's record an error: the other items still run.
  coremap::Json process(const coremap::Json& item) {
    std::string message = greeting_ + ", " + item.value("name", std::string("world"));
    if (shout_) {
      for (char& c : message) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return {{"message", message}};
  }

 private:
  std::string greeting_;
  bool shout_;
};

COREMAP_PLUGIN(@CLASS@, "@NAME@", "0.1.0", "greets the name in each item")
)";

constexpr const char* manifest_template = R"({"name": "ada"}
{"name": "grace"}
{}
)";

constexpr const char* readme_template = R"(# @NAME@

A coremap plugin: for each item `{"name": N}` it returns `{"message": "<greeting>, N"}`.

Build it (Release unless you pass another `-DCMAKE_BUILD_TYPE`) against an installed coremap
(add `-Dcoremap_DIR=<prefix>/lib/cmake/coremap` when coremap is not installed under /usr or
/usr/local) or against coremap's build tree (`-Dcoremap_DIR=<coremap's build directory>`);
`coremap new-plugin` printed the command for the coremap that wrote this project:

```sh
cmake -S . -B build
cmake --build build
```

Run it over the sample manifest, and see its config keys:

```sh
coremap run --plugin build/@NAME@.so --manifest sample.jsonl
coremap run --plugin build/@NAME@.so --manifest sample.jsonl --config '{"greeting": "hi", "shout": true}'
coremap info build/@NAME@.so
```

Edit `@NAME@.cpp`: the constructor receives the config (checked against `config_keys`),
`process()` receives one item and returns its result. `cmake --install build` installs
`@NAME@.so` to coremap's plugin directory under the install prefix (`lib/coremap/plugins`;
`lib/<triplet>/coremap/plugins`, such as `lib/x86_64-linux-gnu/coremap/plugins`, when coremap
came from the Debian packages), where `coremap run --plugin @NAME@ --plugin-path <that directory>`
finds it by name.
)";

// A word the shell reads back unchanged: as is when it holds only safe characters, else quoted.
std::string shell_quoted(const std::string& word) {
  const bool safe = !word.empty() && word.find_first_not_of(
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-+=:,@%") == std::string::npos;
  if (safe) return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The CMake package that belongs to this coremap binary: <prefix>/bin/coremap is installed with
// <prefix>/<libdir>/cmake/coremap, and a build tree keeps <build>/bin/coremap beside
// <build>/coremapConfig.cmake. Empty when neither is there (then find_package searches alone).
std::filesystem::path own_cmake_package(const std::filesystem::path& exe) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = exe.parent_path().parent_path();
  for (const fs::path& dir : {root / COREMAP_INSTALL_LIBDIR / "cmake" / "coremap", root}) {
    if (fs::is_regular_file(dir / "coremapConfig.cmake", ec)) return dir;
  }
  return {};
}

}  // namespace

CLI::App* add_new_plugin_command(CLI::App& app, NewPluginArgs& args) {
  CLI::App* command = app.add_subcommand("new-plugin", "Write a ready-to-build out-of-tree plugin project");
  command->add_option("name", args.name, "Plugin name: letters, digits and _, not starting with a digit")
      ->required()
      ->type_name("NAME");
  command->add_option("dir", args.dir, "Directory to create (default: ./NAME); must not exist or be empty")
      ->type_name("DIR");
  return command;
}

int new_plugin_command(const NewPluginArgs& args) {
  namespace fs = std::filesystem;
  if (!std::regex_match(args.name, std::regex("[A-Za-z_][A-Za-z0-9_]*"))) {
    throw UsageError("plugin name '" + args.name +
                     "' must be letters, digits and _, not starting with a digit");
  }
  std::string class_name;
  bool upper = true;
  for (char c : args.name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    class_name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  if (class_name.empty() || std::isdigit(static_cast<unsigned char>(class_name.front()))) class_name = "Plugin" + class_name;

  const fs::path dir = args.dir.empty() ? fs::path(args.name) : fs::path(args.dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !(fs::is_directory(dir, ec) && fs::is_empty(dir, ec))) {
    throw UsageError("'" + dir.string() + "' already exists and is not an empty directory");
  }
  fs::create_directories(dir, ec);
  if (ec) throw UsageError("cannot create '" + dir.string() + "': " + ec.message());

  const std::pair<std::string, const char*> files[] = {{"CMakeLists.txt", cmake_template},
                                                       {args.name + ".cpp", source_template},
                                                       {"sample.jsonl", manifest_template},
                                                       {"README.md", readme_template}};
  for (const auto& [file, text] : files) {
    const fs::path path = dir / file;
    std::ofstream out(path, std::ios::binary);
    out << fill(text, args.name, class_name);
    out.close();
    if (!out) throw OutputError("cannot write '" + path.string() + "'");
    std::printf("wrote %s\n", path.c_str());
  }
  // Commands that work as printed: this coremap by its own path, and its own CMake package.
  std::error_code exe_ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", exe_ec);
  if (exe_ec) exe = "coremap";
  const fs::path package = exe_ec ? fs::path() : own_cmake_package(exe);
  const std::string configure = package.empty() ? "cmake -S . -B build"
                                                : "cmake -S . -B build -Dcoremap_DIR=" + shell_quoted(package.string());
  std::printf("next: cd %s && %s && cmake --build build && %s run --plugin build/%s.so --manifest sample.jsonl\n",
              shell_quoted(fs::absolute(dir).lexically_normal().string()).c_str(), configure.c_str(),
              shell_quoted(exe.string()).c_str(), args.name.c_str());
  return exit_ok;
}

}  // namespace coremap::cli
