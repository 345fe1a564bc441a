// SPDX-License-Identifier: MIT
// The batch's memory accounting: footprint() estimates the heap a batch holds (its items,
// values between stages and records), which the reorder buffer's budget counts (batch.hpp).
#include "batch.hpp"

#include <algorithm>
#include <utility>

namespace coremap::detail {
namespace {

// What the heap spends on one block of `n` bytes (glibc malloc: an 8-byte header, 16-byte
// granules, 32 bytes at least). Counting blocks, not just the bytes asked for, keeps the
// reorder budget honest for batches of one tiny item, where headers are much of the memory.
constexpr std::size_t heap_block(std::size_t n) noexcept {
  return n == 0 ? 0 : std::max<std::size_t>(32, (n + 8 + 15) & ~std::size_t{15});
}

std::size_t heap_of(const std::string& text) noexcept {
  // A short string lives inside the object (libstdc++'s local buffer) and owns no block.
  const auto data = reinterpret_cast<std::uintptr_t>(text.data());
  const auto self = reinterpret_cast<std::uintptr_t>(&text);
  if (data >= self && data < self + sizeof text) return 0;
  return heap_block(text.capacity() + 1);
}

template <class T>
std::size_t heap_of(const std::vector<T>& vector) noexcept {
  return heap_block(vector.capacity() * sizeof(T));
}

// The heap a JSON value owns (nlohmann_json's defaults: a std::map node per member, a
// std::vector for arrays, each container and string allocated on its own). Iterative: a value
// may be nested deeper than the stack allows to recurse.
std::size_t heap_of(const Json& value, std::vector<const Json*>& stack) {
  // A std::map node: the red-black tree's colour and three links, then the member.
  constexpr std::size_t member_node = 4 * sizeof(void*) + sizeof(std::pair<const std::string, Json>);
  std::size_t bytes = 0;
  stack.assign(1, &value);
  while (!stack.empty()) {
    const Json& j = *stack.back();
    stack.pop_back();
    switch (j.type()) {
      case Json::value_t::object: {
        const auto& members = j.get_ref<const Json::object_t&>();
        bytes += heap_block(sizeof members);
        for (const auto& [key, member] : members) {
          bytes += heap_block(member_node) + heap_of(key);
          if (member.is_structured() || member.is_string() || member.is_binary()) stack.push_back(&member);
        }
        break;
      }
      case Json::value_t::array: {
        const auto& elements = j.get_ref<const Json::array_t&>();
        bytes += heap_block(sizeof elements) + heap_of(elements);
        for (const Json& element : elements) {
          if (element.is_structured() || element.is_string() || element.is_binary()) stack.push_back(&element);
        }
        break;
      }
      case Json::value_t::string: {
        const auto& text = j.get_ref<const Json::string_t&>();
        bytes += heap_block(sizeof text) + heap_of(text);
        break;
      }
      case Json::value_t::binary: {
        const auto& binary = j.get_binary();
        bytes += heap_block(sizeof binary) + heap_of(static_cast<const std::vector<std::uint8_t>&>(binary));
        break;
      }
      default:
        break;
    }
  }
  return bytes;
}

// nlohmann_json's serializer (one per batch, in its RecordWriter) allocates a 512-character
// indentation string when it is built.
constexpr std::size_t serializer_heap_bytes = heap_block(512 + 1);

}  // namespace

std::size_t footprint(const Batch& batch) {
  std::size_t bytes = heap_block(sizeof(Batch)) + serializer_heap_bytes + heap_of(batch.raw.bytes) +
                      heap_of(batch.raw.items) + heap_of(batch.out) + heap_of(batch.records) +
                      heap_of(batch.values) + heap_of(batch.next);
  if (batch.records.empty() && batch.values.empty() && batch.next.empty()) return bytes;
  std::vector<const Json*> stack;
  for (const Record& record : batch.records) bytes += heap_of(record.error) + heap_of(record.result, stack);
  for (const auto* values : {&batch.values, &batch.next}) {
    for (const Value& value : *values) bytes += heap_of(value.error) + heap_of(value.data, stack);
  }
  return bytes;
}

}  // namespace coremap::detail
