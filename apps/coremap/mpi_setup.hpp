// SPDX-License-Identifier: MIT
#pragma once

// What `run` and `bench` under mpirun share beyond coremap::mpi: the set-up check that prints
// the one message.

#include <cstdio>
#include <string>

#include <coremap/mpi.hpp>

namespace coremap::cli {

/// mpi::all_set_up(), printing "coremap: error: ..." on the rank that reports the failure.
inline bool set_up_everywhere(const mpi::Session& session, const std::string& error) {
  std::string report;
  if (mpi::all_set_up(session, error, &report)) return true;
  if (!report.empty()) std::fprintf(stderr, "coremap: error: %s\n", report.c_str());
  return false;
}

}  // namespace coremap::cli
