// SPDX-License-Identifier: MIT
// The version query and the build description (coremap, TBB headers and runtime, compiler).
#include <coremap/plugin.hpp>
#include <coremap/version.hpp>

#include <oneapi/tbb/version.h>

#include "build_info.hpp"

namespace coremap {

const char* version() noexcept { return COREMAP_VERSION_STRING; }

const char* git_revision() noexcept { return COREMAP_GIT_REVISION; }

std::string tbb_version() { return std::string(TBB_VERSION_STRING) + " (runtime " + TBB_runtime_version() + ")"; }

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("g++ ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::string build_description() {
  return std::string("coremap ") + COREMAP_VERSION_STRING + " (git " + COREMAP_GIT_REVISION +
         ")\noneTBB " + TBB_VERSION_STRING + " (runtime " + TBB_runtime_version() + ")\nplugin ABI " +
         std::to_string(plugin_abi_version) + ", build fingerprint " + detail::build_fingerprint;
}

}  // namespace coremap
