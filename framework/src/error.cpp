// SPDX-License-Identifier: MIT
// The error classes of coremap/error.hpp, anchored in libcoremap.
#include <coremap/error.hpp>

namespace coremap {

// Out-of-line destructors anchor each vtable and type_info in libcoremap, so a catch in an
// application or plugin matches the type thrown here.
Error::~Error() = default;
ManifestError::~ManifestError() = default;
PluginError::~PluginError() = default;
ConfigError::~ConfigError() = default;
OutputError::~OutputError() = default;
UsageError::~UsageError() = default;
ResumeError::~ResumeError() = default;

}  // namespace coremap
