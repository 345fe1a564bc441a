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

# Installed coremap: add -DCMAKE_PREFIX_PATH=<its prefix> unless it is in /usr or /usr/local.
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

Build it against an installed coremap (add `-DCMAKE_PREFIX_PATH=<prefix>` when coremap is not
installed under /usr or /usr/local):

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
`@NAME@.so` to `lib/coremap/plugins` under the install prefix, where
`coremap run --plugin @NAME@ --plugin-path <prefix>/lib/coremap/plugins` finds it by name.
)";

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
  std::printf("next: cd %s && cmake -S . -B build && cmake --build build && "
              "coremap run --plugin build/%s.so --manifest sample.jsonl\n",
              dir.c_str(), args.name.c_str());
  return exit_ok;
}

}  // namespace coremap::cli
