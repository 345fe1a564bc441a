// SPDX-License-Identifier: MIT
// The ordered-delivery primitive on one thread: the order of puts is the test's, and a put made
// while a run is being delivered (another thread's, in a real run) is made from inside `deliver`.
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ordered_delivery.hpp"

namespace {

using coremap::detail::OrderedDelivery;

TEST(OrderedDeliveryTest, DeliversNothingUntilTheFirstArrives) {
  OrderedDelivery<int> order;
  std::vector<int> delivered;
  auto deliver = [&](int& value) { delivered.push_back(value); };
  order.put_and_drain(2, 20, deliver);
  order.put_and_drain(1, 10, deliver);
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(order.next(), 0u);
  order.put_and_drain(0, 0, deliver);
  EXPECT_EQ(delivered, (std::vector<int>{0, 10, 20}));
  EXPECT_EQ(order.next(), 3u);
}

TEST(OrderedDeliveryTest, DeliversEachValueAsSoonAsThoseBeforeItAre) {
  OrderedDelivery<std::string> order;
  std::vector<std::string> delivered;
  auto deliver = [&](std::string& value) { delivered.push_back(std::move(value)); };
  order.put_and_drain(0, "a", deliver);
  EXPECT_EQ(delivered, (std::vector<std::string>{"a"}));
  order.put_and_drain(2, "c", deliver);
  EXPECT_EQ(delivered.size(), 1u);
  order.put_and_drain(1, "b", deliver);
  order.put_and_drain(3, "d", deliver);
  EXPECT_EQ(delivered, (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(OrderedDeliveryTest, SaysWhetherAValueWaitsForOneNotYetPut) {
  OrderedDelivery<int> order;
  std::vector<bool> behind;
  auto admit = [&](int&, bool b) { behind.push_back(b); };
  order.put(2, 2, admit);  // 0 is not there
  order.put(0, 0, admit);  // the next one
  order.put(1, 1, admit);  // 0 is there: waits for the deliverer only
  EXPECT_EQ(behind, (std::vector<bool>{true, false, false}));
}

TEST(OrderedDeliveryTest, AdmitMayChangeTheParkedValueAndAnswer) {
  OrderedDelivery<int> order;
  EXPECT_EQ(order.put(1, 5, [](int& parked, bool behind) { parked *= 10; return behind ? 7 : 8; }), 7);
  order.put(0, 0);
  std::vector<int> delivered;
  order.drain([&](int& value) { delivered.push_back(value); });
  EXPECT_EQ(delivered, (std::vector<int>{0, 50}));
}

TEST(OrderedDeliveryTest, GrowsPastItsCapacityKeepingEachValueAtItsNumber) {
  OrderedDelivery<int> order(0, 4);
  std::vector<int> delivered;
  auto deliver = [&](int& value) { delivered.push_back(value); };
  for (int i = 99; i >= 1; --i) order.put_and_drain(static_cast<std::uint64_t>(i), i, deliver);
  EXPECT_TRUE(delivered.empty());
  order.put_and_drain(0, 0, deliver);
  ASSERT_EQ(delivered.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(delivered[static_cast<std::size_t>(i)], i);
}

TEST(OrderedDeliveryTest, GrowsWhileValuesBeforeTheGapWereDelivered) {
  OrderedDelivery<int> order(0, 2);
  std::vector<int> delivered;
  auto deliver = [&](int& value) { delivered.push_back(value); };
  order.put_and_drain(0, 0, deliver);
  order.put_and_drain(1, 1, deliver);
  order.put_and_drain(5, 5, deliver);  // ring of 2 at next 2: grows to 4
  order.put_and_drain(3, 3, deliver);
  order.put_and_drain(4, 4, deliver);
  order.put_and_drain(2, 2, deliver);
  EXPECT_EQ(delivered, (std::vector<int>{0, 1, 2, 3, 4, 5}));
}

TEST(OrderedDeliveryTest, StartsAtTheFirstNumberGiven) {
  OrderedDelivery<int> order(10);
  std::vector<int> delivered;
  auto deliver = [&](int& value) { delivered.push_back(value); };
  order.put_and_drain(11, 11, deliver);
  order.put_and_drain(10, 10, deliver);
  EXPECT_EQ(delivered, (std::vector<int>{10, 11}));
}

TEST(OrderedDeliveryTest, AValuePutWhileDeliveringIsDeliveredByTheDelivererNotTheCaller) {
  OrderedDelivery<int> order;
  std::vector<int> delivered;
  int nested_drains = 0;
  std::function<void(int&)> deliver = [&](int& value) {
    delivered.push_back(value);
    if (value == 0) {
      // Another thread's put and drain, while this one delivers: its drain returns at once.
      order.put_and_drain(1, 1, deliver);
      ++nested_drains;
      EXPECT_EQ(delivered, (std::vector<int>{0}));
    }
  };
  order.put_and_drain(0, 0, deliver);
  EXPECT_EQ(nested_drains, 1);
  EXPECT_EQ(delivered, (std::vector<int>{0, 1}));
}

TEST(OrderedDeliveryTest, RefusesANumberPutTwice) {
  OrderedDelivery<int> order;
  order.put(1, 1);
  EXPECT_THROW(order.put(1, 1), std::logic_error);
  order.put(0, 0);
  order.drain([](int&) {});
  EXPECT_THROW(order.put(0, 0), std::logic_error);
}

TEST(OrderedDeliveryTest, AThrowingDeliveryEndsThatDrainOnly) {
  OrderedDelivery<int> order;
  std::vector<int> delivered;
  order.put(0, 0);
  EXPECT_THROW(order.drain([](int&) { throw std::runtime_error("sink failed"); }), std::runtime_error);
  order.put_and_drain(1, 1, [&](int& value) { delivered.push_back(value); });
  EXPECT_EQ(delivered, (std::vector<int>{1}));
}

}  // namespace
