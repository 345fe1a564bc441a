// SPDX-License-Identifier: MIT
// A stand-in for another nlohmann_json release found first on the include path: the real
// header, claiming version 3.99.0 (tests/abi/CMakeLists.txt).
#pragma once
#include_next <nlohmann/json.hpp>
#undef NLOHMANN_JSON_VERSION_MINOR
#define NLOHMANN_JSON_VERSION_MINOR 99
#undef NLOHMANN_JSON_VERSION_PATCH
#define NLOHMANN_JSON_VERSION_PATCH 0
