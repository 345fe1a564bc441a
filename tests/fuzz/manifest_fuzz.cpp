// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes as a manifest in each format, through the reader (cutting),
// the engine's parser and the record writer, serially, with an in-process plugin that echoes
// its item. Every record written must be one valid JSON line.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <coremap/coremap.hpp>

namespace {

const std::shared_ptr<const coremap::Plugin>& echo() {
  static const auto plugin = coremap::Plugin::from_function(
      [](const coremap::Json& item, coremap::Context&) -> coremap::Json { return item; }, "echo");
  return plugin;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = ::memfd_create("manifest", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (size > 0 && ::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  for (auto format : {coremap::ManifestFormat::jsonl, coremap::ManifestFormat::json_array,
                      coremap::ManifestFormat::lines, coremap::ManifestFormat::automatic}) {
    try {
      coremap::ManifestReader manifest(path, format);
      coremap::Engine engine(echo(), coremap::Json::object(), {.serial = true});
      std::uint64_t records = 0;
      coremap::CallbackSink sink([&](std::string_view text) {
        while (!text.empty()) {
          const auto end = text.find('\n');
          if (end == std::string_view::npos) std::abort();  // a record without its newline
          const auto record = coremap::Json::parse(text.substr(0, end));  // throws: invalid JSON written
          if (!record.contains("index") || !record.contains("ok")) std::abort();
          text.remove_prefix(end + 1);
          ++records;
        }
      });
      const auto stats = engine.run(manifest, sink);
      if (stats.items != records) std::abort();
    } catch (const coremap::ManifestError&) {
      // A manifest that is not an array under --format json is a setup error: fine.
    }
  }
  ::close(fd);
  return 0;
}
