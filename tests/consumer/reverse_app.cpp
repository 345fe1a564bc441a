// SPDX-License-Identifier: MIT
// Embeds the engine: loads the out-of-tree plugin given as argv[1], runs it over the JSON Lines
// manifest argv[2] with records through a callback, and prints one result per line.
#include <cstdio>
#include <string>

#include <coremap/coremap.hpp>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  try {
    coremap::Engine engine(coremap::Plugin::load(argv[1]), coremap::Json::object(), {.threads = 2});
    coremap::ManifestReader manifest(argv[2]);
    const auto stats = engine.run(manifest, [](const coremap::Record& record) {
      std::printf("%s\n", record.ok ? record.result.get<std::string>().c_str() : "ERROR");
    });
    return stats.failed == 0 ? 0 : 1;
  } catch (const coremap::Error& e) {
    std::fprintf(stderr, "reverse_app: %s\n", e.what());
    return 2;
  }
}
