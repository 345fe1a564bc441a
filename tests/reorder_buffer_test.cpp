// SPDX-License-Identifier: MIT
// The reorder buffer's writes and token releases, on one thread: batches are numbers, the test
// puts them in the order it wants, and a put made while the writer writes comes from `write`.
#include <cstdint>
#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "reorder_buffer.hpp"

namespace {

struct Log {
  std::vector<int> writes;
  int releases = 0;
  std::vector<int> releases_at_write;  // tokens released before each write
};

struct Writer {
  Log* log;
  std::function<void(int)>* also = nullptr;
  void operator()(int batch) const {
    log->releases_at_write.push_back(log->releases);
    log->writes.push_back(batch);
    if (also != nullptr && *also) (*also)(batch);
  }
};
struct Releaser {
  Log* log;
  void operator()() const { ++log->releases; }
};
using Buffer = coremap::detail::ReorderBuffer<int, Writer, Releaser>;

constexpr std::size_t large_budget = 1 << 20;

TEST(ReorderBufferTest, OutOfOrderBatchesAreWrittenInOrderAndGiveTheirTokensBackEarly) {
  Log log;
  Buffer buffer(large_budget, Writer{&log}, Releaser{&log});
  buffer.put(2, 2, 100);
  EXPECT_EQ(log.releases, 1);  // behind 0, which is still being processed
  buffer.put(1, 1, 100);
  EXPECT_EQ(log.releases, 2);
  EXPECT_TRUE(log.writes.empty());
  EXPECT_GT(buffer.parked_bytes(), 200u);
  buffer.put(0, 0, 100);
  EXPECT_EQ(log.writes, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(log.releases, 3);  // 0 kept its token until it was written
  EXPECT_EQ(log.releases_at_write, (std::vector<int>{2, 3, 3}));
  EXPECT_EQ(buffer.parked_bytes(), 0u);
}

TEST(ReorderBufferTest, InOrderBatchesKeepTheirTokensUntilWritten) {
  Log log;
  Buffer buffer(large_budget, Writer{&log}, Releaser{&log});
  for (int i = 0; i < 3; ++i) buffer.put(static_cast<std::uint64_t>(i), i, 100);
  EXPECT_EQ(log.writes, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(log.releases_at_write, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(log.releases, 3);
}

TEST(ReorderBufferTest, OverTheBudgetParkedBatchesKeepTheirTokens) {
  Log log;
  // Room for one parked batch of 100 bytes (and the buffer's own slots), not two.
  Buffer buffer(150 + 3 * 64, Writer{&log}, Releaser{&log});
  buffer.put(3, 3, 100);
  EXPECT_EQ(log.releases, 1);
  buffer.put(2, 2, 100);
  EXPECT_EQ(log.releases, 1);  // over the budget: keeps its token
  buffer.put(1, 1, 100);
  EXPECT_EQ(log.releases, 1);
  buffer.put(0, 0, 100);
  EXPECT_EQ(log.writes, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(log.releases, 4);  // every token back once its batch is written
  EXPECT_EQ(log.releases_at_write, (std::vector<int>{1, 2, 3, 4}));
}

TEST(ReorderBufferTest, ABatchWaitingForTheWriterOnlyKeepsItsToken) {
  Log log;
  std::function<void(int)> during;
  Buffer* self = nullptr;
  Buffer buffer(large_budget, Writer{&log, &during}, Releaser{&log});
  self = &buffer;
  // While batch 0 is written (1 is next and not parked), batch 2 arrives behind 1: early; then
  // 1 arrives, the next one: it waits for the writer and keeps its token.
  during = [&](int batch) {
    if (batch != 0) return;
    self->put(2, 2, 100);
    EXPECT_EQ(log.releases, 1);
    self->put(1, 1, 100);
    EXPECT_EQ(log.releases, 1);
    EXPECT_EQ(log.writes, (std::vector<int>{0}));  // the writer writes them, not this put
  };
  buffer.put(0, 0, 100);
  EXPECT_EQ(log.writes, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(log.releases, 3);
}

}  // namespace
