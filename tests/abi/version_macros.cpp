// SPDX-License-Identifier: MIT
// The compile-time version macros agree with project(VERSION) (argv[1], from CMake) and with
// the library's runtime coremap::version().
#include <coremap/version.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string macros = std::to_string(COREMAP_VERSION_MAJOR) + "." + std::to_string(COREMAP_VERSION_MINOR) +
                             "." + std::to_string(COREMAP_VERSION_PATCH);
  const bool number_ok =
      COREMAP_VERSION == COREMAP_VERSION_MAJOR * 10000 + COREMAP_VERSION_MINOR * 100 + COREMAP_VERSION_PATCH;
  std::printf("project %s, macros %s, runtime %s, COREMAP_VERSION %d\n", argv[1], macros.c_str(),
              coremap::version(), COREMAP_VERSION);
  return macros == argv[1] && macros == coremap::version() && number_ok ? 0 : 1;
}
