// SPDX-License-Identifier: MIT
#include <coremap/error.hpp>
#include <coremap/plugin_loader.hpp>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace coremap {
namespace {

// The message of the PluginError that loading `path` throws.
std::string load_error(const std::string& path) {
  try {
    Plugin::load(path);
  } catch (const PluginError& e) {
    return e.what();
  }
  ADD_FAILURE() << "loading " << path << " did not throw";
  return {};
}

TEST(PluginLoaderTest, LoadsValidPluginAndReadsDescriptor) {
  const auto plugin = Plugin::load(test::fixture("guarded"));
  EXPECT_EQ(plugin->name(), "guarded");
  EXPECT_EQ(plugin->version(), "1.0.0");
  EXPECT_FALSE(plugin->reentrant());
  EXPECT_EQ(plugin->descriptor().abi_version, plugin_abi_version);
  EXPECT_STREQ(plugin->descriptor().fingerprint, detail::build_fingerprint);
  EXPECT_TRUE(Plugin::load(test::fixture("throwing"))->reentrant());
}

TEST(PluginLoaderTest, RejectsMissingEntrySymbol) {
  const std::string path = test::fixture("no_entry");
  const std::string error = load_error(path);
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("not a coremap plugin"), std::string::npos) << error;
  EXPECT_NE(error.find("coremap_plugin_entry"), std::string::npos) << error;
}

TEST(PluginLoaderTest, RejectsAbiMismatch) {
  const std::string error = load_error(test::fixture("wrong_abi"));
  EXPECT_NE(error.find("fixture_wrong_abi.so"), std::string::npos) << error;
  EXPECT_NE(error.find("ABI 999"), std::string::npos) << error;
}

TEST(PluginLoaderTest, RejectsFingerprintMismatch) {
  const std::string error = load_error(test::fixture("wrong_fingerprint"));
  EXPECT_NE(error.find("clang-99;libc++-99"), std::string::npos) << error;
  EXPECT_NE(error.find(detail::build_fingerprint), std::string::npos) << error;
}

TEST(PluginLoaderTest, RejectsUnresolvableDependency) {
  const std::string error = load_error(test::fixture("unresolved"));
  EXPECT_NE(error.find("fixture_unresolved.so"), std::string::npos) << error;
  EXPECT_NE(error.find("undefined symbol: coremap_fixture_symbol_nobody_defines"), std::string::npos) << error;
}

TEST(PluginLoaderTest, RejectsFileThatIsNotASharedLibrary) {
  const std::string error = load_error(test::fixture("not_a_library"));
  EXPECT_NE(error.find("fixture_not_a_library.so"), std::string::npos) << error;
  EXPECT_NE(error.find("invalid ELF header"), std::string::npos) << error;
}

TEST(PluginLoaderTest, RejectsMissingFileAndDirectory) {
  EXPECT_NE(load_error("/nonexistent/x.so").find("no such file"), std::string::npos);
  EXPECT_NE(load_error(COREMAP_FIXTURE_DIR).find("is a directory"), std::string::npos);
}

TEST(PluginLoaderTest, ConstructorFailureNamesPluginAndMessage) {
  const auto plugin = Plugin::load(test::fixture("ctor_throws"));
  try {
    PluginInstance instance(plugin, plugin->resolve_config(Json::object()));
    FAIL();
  } catch (const PluginError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ctor_throws"), std::string::npos) << what;
    EXPECT_NE(what.find("config needs \"ok\": true"), std::string::npos) << what;
  }
  EXPECT_NO_THROW(PluginInstance(plugin, plugin->resolve_config(Json{{"ok", true}})));
}

TEST(PluginLoaderTest, ValidatesDeclaredConfig) {
  const auto plugin = Plugin::load(test::fixture("guarded"));
  EXPECT_EQ(plugin->resolve_config(Json()).at("work_us"), 0);
  EXPECT_EQ(plugin->resolve_config(Json{{"work_us", 5}}).at("work_us"), 5);
  try {
    plugin->resolve_config(Json{{"wrok_us", 5}});
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'wrok_us'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("work_us"), std::string::npos) << e.what();
  }
  EXPECT_THROW(plugin->resolve_config(Json{{"work_us", "five"}}), ConfigError);
  EXPECT_THROW(plugin->resolve_config(Json::array()), ConfigError);
  // Undeclared config passes through as given.
  const auto open = Plugin::load(test::fixture("ctor_throws"));
  EXPECT_EQ(open->resolve_config(Json{{"anything", 1}}).at("anything"), 1);
}

TEST(PluginLoaderTest, FindsBundledPluginsByNameWithNoVariableSet) {
  ::unsetenv("COREMAP_PLUGIN_PATH");
  const PluginLoader loader;
  const auto path = loader.find("sha256");
  EXPECT_EQ(std::filesystem::canonical(path), std::filesystem::canonical(test::bundled("sha256")));
  EXPECT_EQ(loader.load("wordcount")->name(), "wordcount");
  EXPECT_EQ(loader.load("spin.so")->name(), "spin");
}

TEST(PluginLoaderTest, SearchOrderIsFlagThenEnvironmentThenBundled) {
  test::TempDir flag_dir, env_dir;
  std::filesystem::copy_file(test::fixture("guarded"), flag_dir.path() / "sha256.so");
  std::filesystem::copy_file(test::fixture("throwing"), env_dir.path() / "sha256.so");
  std::filesystem::copy_file(test::fixture("throwing"), env_dir.path() / "only_env.so");
  ::setenv("COREMAP_PLUGIN_PATH", ("/nonexistent:" + env_dir.path().string()).c_str(), 1);
  EXPECT_EQ(PluginLoader({flag_dir.path()}).load("sha256")->name(), "guarded");
  EXPECT_EQ(PluginLoader().load("sha256")->name(), "throwing");
  EXPECT_EQ(PluginLoader().load("only_env")->name(), "throwing");
  ::unsetenv("COREMAP_PLUGIN_PATH");
  EXPECT_EQ(PluginLoader().load("sha256")->name(), "sha256");
  try {
    PluginLoader().find("no_such_plugin");
    FAIL();
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_plugin.so"), std::string::npos) << e.what();
  }
}

TEST(PluginLoaderTest, ListsPluginsAndReportsBrokenOnes) {
  const PluginLoader loader({COREMAP_FIXTURE_DIR}, false, true);
  const auto listings = loader.list();
  bool saw_guarded = false, saw_sha256 = false, saw_broken = false;
  for (const auto& listing : listings) {
    if (listing.plugin && listing.plugin->name() == "guarded") saw_guarded = true;
    if (listing.plugin && listing.plugin->name() == "sha256") saw_sha256 = true;
    if (!listing.plugin && listing.path.filename() == "fixture_wrong_abi.so") {
      saw_broken = listing.error.find("ABI 999") != std::string::npos;
    }
  }
  EXPECT_TRUE(saw_guarded);
  EXPECT_TRUE(saw_sha256);
  EXPECT_TRUE(saw_broken);
}

// A plugin class linked into the test binary runs without a shared library.
struct Doubler {
  static constexpr bool reentrant = true;
  explicit Doubler(const Json&) {}
  Json process(const Json& item) { return item.get<int>() * 2; }
};

TEST(PluginLoaderTest, RunsPluginCompiledIntoTheApplication) {
  const auto plugin = Plugin::from_descriptor(detail::descriptor_of<Doubler>("doubler", "1", "x2"), "builtin");
  PluginInstance instance(plugin, Json::object());
  Context context(0, nullptr);
  Json result;
  std::string error;
  ASSERT_TRUE(instance.process(21, context, result, error));
  EXPECT_EQ(result, 42);
  EXPECT_FALSE(instance.process("text", context, result, error));
  EXPECT_NE(error.find("type must be number"), std::string::npos) << error;
}

}  // namespace
}  // namespace coremap
