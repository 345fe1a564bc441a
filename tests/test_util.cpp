// SPDX-License-Identifier: MIT
#include "test_util.hpp"

#include <stdlib.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <gtest/gtest.h>

namespace coremap::test {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "coremap-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, std::string_view contents) const {
  const auto file = path_ / name;
  std::ofstream out(file, std::ios::binary);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
  return file.string();
}

std::string shell(const std::string& command) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::string output;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << "command failed: " << command;
  return output;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string fixture(const std::string& name) {
  return std::string(COREMAP_FIXTURE_DIR) + "/fixture_" + name + ".so";
}

std::string bundled(const std::string& name) {
  return std::string(COREMAP_BUNDLED_PLUGIN_DIR) + "/" + name + ".so";
}

std::vector<Json> numbers(int n) {
  std::vector<Json> items;
  for (int i = 0; i < n; ++i) items.push_back({{"n", i}});
  return items;
}

}  // namespace coremap::test
