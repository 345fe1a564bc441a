// SPDX-License-Identifier: MIT
// A plugin compiled with -std=c++17 (tests/abi/CMakeLists.txt): the first error says why.
#include <coremap/plugin.hpp>
