// SPDX-License-Identifier: MIT
// Compiled (not linked) by tests/abi/CMakeLists.txt with different nlohmann_json settings.
#include <coremap/engine.hpp>

int main() {
  coremap::RunOptions options;
  return static_cast<int>(options.threads);
}
