// SPDX-License-Identifier: MIT
// MPI set-up and the collectives every rank makes around a run.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <coremap/error.hpp>

#include "messages.hpp"

namespace coremap::mpi {

Session::Session(MPI_Comm comm) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = 0;
  if (initialized == 0) {
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    finalize_ = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    // Every rank runs the same MPI library, so every rank throws here alike.
    if (finalize_) MPI_Finalize();
    throw Error("the MPI library provides thread level " + std::to_string(provided) +
                ", below MPI_THREAD_SERIALIZED, which a rank's TBB threads need");
  }
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

Session::~Session() {
  MPI_Comm_free(&comm_);
  if (finalize_) MPI_Finalize();
}

bool all_set_up(const Session& session, const std::string& error, std::string* report) {
  int mine = error.empty() ? 0 : 1;
  int any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, session.comm());
  int coordinator = mine;
  MPI_Bcast(&coordinator, 1, MPI_INT, 0, session.comm());
  if (report != nullptr) {
    report->clear();
    // Every rank usually fails alike (a plugin not found): one message, from rank 0, is enough.
    if (mine != 0 && session.rank() == 0) *report = error;
    if (mine != 0 && session.rank() != 0 && coordinator == 0) *report = "rank " + std::to_string(session.rank()) + ": " + error;
  }
  return any == 0;
}

void broadcast(const Session& session, std::string& text) {
  std::uint64_t n = text.size();
  MPI_Request request;
  MPI_Ibcast(&n, 1, MPI_UINT64_T, 0, session.comm(), &request);
  wait_idle(request);
  text.resize(n);
  MPI_Ibcast(text.data(), static_cast<int>(n), MPI_BYTE, 0, session.comm(), &request);
  wait_idle(request);
}

void wait_idle(MPI_Request& request) {
  for (auto pause = std::chrono::microseconds(20);; pause = std::min(pause * 2, std::chrono::microseconds(1000))) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done != 0) return;
    std::this_thread::sleep_for(pause);
  }
}

void abort_job(const Session& session, const char* what) {
  std::fprintf(stderr, "coremap: error: rank %d: %s\n", session.rank(), what);
  std::fflush(stderr);
  MPI_Abort(session.comm(), abort_exit_code);
  std::_Exit(abort_exit_code);
}

}  // namespace coremap::mpi
