// SPDX-License-Identifier: MIT
#include <coremap/error.hpp>
#include <coremap/plugin_loader.hpp>

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <coremap/engine.hpp>

#include <tuple>

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

// True when the library at `path` is loaded in this process (dlopen's RTLD_NOLOAD loads
// nothing; it only finds a library already loaded).
bool is_loaded(const std::string& path) {
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (handle == nullptr) return false;
  ::dlclose(handle);
  return true;
}

TEST(PluginLoaderTest, NeverRunsCodeOfALibraryThatIsNotAPlugin) {
  const std::string path = test::fixture("ctor_marker");
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const std::string error = load_error(path);
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(error.find("not a coremap plugin"), std::string::npos) << error;
  EXPECT_EQ(out.find("CTOR_MARKER_RAN"), std::string::npos) << out;
  EXPECT_EQ(err.find("CTOR_MARKER_RAN"), std::string::npos) << err;
  EXPECT_FALSE(is_loaded(path));
  EXPECT_FALSE(is_loaded(test::fixture("no_entry")));
  load_error(test::fixture("no_entry"));
  EXPECT_FALSE(is_loaded(test::fixture("no_entry")));
}

TEST(PluginLoaderTest, RefusesAFifoWithoutBlocking) {
  test::TempDir dir;
  const auto fifo = dir.path() / "fifo.so";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(load_error(fifo.string()).find("not a regular file"), std::string::npos);
}

TEST(PluginLoaderTest, RefusesATruncatedCopyOfAPlugin) {
  test::TempDir dir;
  std::ifstream in(test::fixture("guarded"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 4096u);
  const std::string path = dir.write("cut.so", std::string_view(bytes).substr(0, 4096));
  const std::string error = load_error(path);
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  EXPECT_FALSE(is_loaded(path));
}

TEST(PluginLoaderTest, FingerprintRecordsTheLayoutSettingsOfThisBuild) {
  const std::string fingerprint = detail::build_fingerprint;
  EXPECT_NE(fingerprint.find("sizeof=json:" + std::to_string(sizeof(Json)) + ",string:" +
                             std::to_string(sizeof(std::string)) + ",array:" +
                             std::to_string(sizeof(std::vector<Json>)) + ","),
            std::string::npos)
      << fingerprint;
#if defined(_GLIBCXX_DEBUG)
  EXPECT_NE(fingerprint.find(";_GLIBCXX_DEBUG=1;"), std::string::npos) << fingerprint;
#else
  EXPECT_NE(fingerprint.find(";_GLIBCXX_DEBUG=0;"), std::string::npos) << fingerprint;
#endif
  EXPECT_NE(fingerprint.find(";nlohmann_json=" + std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                             std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                             std::to_string(NLOHMANN_JSON_VERSION_PATCH) + ";"),
            std::string::npos)
      << fingerprint;
}

// The same echo plugin built with a setting that changes Json's layout: refused, naming it.
TEST(PluginLoaderTest, RefusesPluginsBuiltWithLayoutChangingSettings) {
  const std::string debug = load_error(test::fixture("glibcxx_debug"));
  EXPECT_NE(debug.find("fixture_glibcxx_debug.so"), std::string::npos) << debug;
  EXPECT_NE(debug.find("the plugin is built with _GLIBCXX_DEBUG, this coremap without"), std::string::npos) << debug;
  const std::string diagnostics = load_error(test::fixture("json_diagnostics"));
  EXPECT_NE(diagnostics.find("the plugin is built with JSON_DIAGNOSTICS, this coremap without"), std::string::npos)
      << diagnostics;
  // Only the named setting, not the sizes it implies.
  EXPECT_EQ(diagnostics.find("other sizes"), std::string::npos) << diagnostics;
  // Refused from the fingerprint in the ELF file (COREMAP_PLUGIN exports it): never loaded.
  EXPECT_FALSE(is_loaded(test::fixture("glibcxx_debug")));
  EXPECT_FALSE(is_loaded(test::fixture("json_diagnostics")));
}

TEST(PluginLoaderTest, NamesTheFingerprintFieldThatDiffers) {
  const std::string json = load_error(test::fixture("other_json"));
  EXPECT_NE(json.find("the plugin is built with nlohmann_json 3.0.0, this coremap with " +
                      std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." + std::to_string(NLOHMANN_JSON_VERSION_MINOR) +
                      "." + std::to_string(NLOHMANN_JSON_VERSION_PATCH)),
            std::string::npos)
      << json;
  // No named field differs: the sizes are named, as a setting the list does not cover.
  const std::string sizes = load_error(test::fixture("other_sizes"));
  EXPECT_NE(sizes.find("the plugin's types have other sizes (json:1, this coremap's json:" + std::to_string(sizeof(Json))),
            std::string::npos)
      << sizes;
  EXPECT_NE(sizes.find("a build setting the fingerprint does not name"), std::string::npos) << sizes;
}

TEST(PluginLoaderTest, RefusesAnAddressSanitizerPluginBeforeLoadingIt) {
#if !COREMAP_HAVE_ASAN_FIXTURE
  GTEST_SKIP() << "no fixture_asan: this build is sanitized itself, or cannot link -fsanitize=address";
#else
  // dlopen would have ASan's runtime print its complaint and exit the process with status 1.
  const std::string path = test::fixture("asan");
  const std::string error = load_error(path);
  EXPECT_NE(error.find("the plugin is built with AddressSanitizer (it needs libasan.so"), std::string::npos) << error;
  EXPECT_NE(error.find("this coremap without"), std::string::npos) << error;
  EXPECT_FALSE(is_loaded(path));
#endif
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
  EXPECT_NE(error.find("not an ELF file"), std::string::npos) << error;
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
  // A library of the same name that is not a plugin hides nothing, and is never loaded.
  test::TempDir other_dir;
  const auto impostor = other_dir.path() / "sha256.so";
  std::filesystem::copy_file(test::fixture("ctor_marker"), impostor);
  const PluginLoader shadowed({other_dir.path()}, false, true);
  EXPECT_EQ(shadowed.load("sha256")->name(), "sha256");
  EXPECT_FALSE(is_loaded(impostor.string()));
  std::size_t listed = 0;
  for (const auto& listing : shadowed.list()) {
    if (listing.path.filename() == "sha256.so") {
      ++listed;
      EXPECT_TRUE(listing.plugin != nullptr) << listing.path;
    }
  }
  EXPECT_EQ(listed, 1u);
  // With no plugin of that name, the one file found is returned, so load() says why.
  const std::string alone = (other_dir.path() / "alone.so").string();
  std::filesystem::copy_file(test::fixture("ctor_marker"), alone);
  EXPECT_EQ(PluginLoader({other_dir.path()}, false, true).find("alone"), alone);
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

TEST(PluginLoaderTest, ListSetsAsideFilesThatAreNotPluginsWithoutLoadingThem) {
  test::TempDir dir;
  for (const char* name : {"guarded", "ctor_marker", "no_entry", "not_a_library", "wrong_abi"}) {
    std::filesystem::copy_file(test::fixture(name), dir.path() / (std::string(name) + ".so"));
  }
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const auto listings = PluginLoader({dir.path()}, false, false).list();
  const std::string out = testing::internal::GetCapturedStdout();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("CTOR_MARKER_RAN"), std::string::npos) << out;
  EXPECT_EQ(err.find("CTOR_MARKER_RAN"), std::string::npos) << err;
  EXPECT_FALSE(is_loaded((dir.path() / "ctor_marker.so").string()));
  ASSERT_EQ(listings.size(), 5u);
  for (const auto& listing : listings) {
    const std::string name = listing.path.stem().string();
    const bool plugin = name == "guarded" || name == "wrong_abi";
    EXPECT_EQ(listing.is_plugin, plugin) << name;
    EXPECT_EQ(listing.plugin != nullptr, name == "guarded") << name;
    if (name != "guarded") {
      EXPECT_FALSE(listing.error.empty()) << name;
    }
  }
}

// A plugin class linked into the test binary runs without a shared library.
struct Doubler {
  static constexpr bool reentrant = true;
  explicit Doubler(const Json&) {}
  Json process(const Json& item) { return item.get<int>() * 2; }
};

// A class compiled into the application with config keys, made a plugin twice under two
// names: each keeps its own (the class's descriptor is copied, not shared), and its config is
// checked as a library's is. Oracle: i * factor computed here.
struct Scaler {
  static constexpr ConfigKey config_keys[] = {{"factor", "integer", "2", "multiplier"}};
  explicit Scaler(const Json& config) : factor_(config.at("factor").get<int>()) {}
  Json process(const Json& item) { return item.get<int>() * factor_; }
  int factor_;
};

TEST(PluginLoaderTest, AClassCompiledIntoTheApplicationIsAPluginWithoutDetail) {
  const auto twice = Plugin::from_class<Scaler>("twice", "1.0.0", "doubles");
  const auto thrice = Plugin::from_class<Scaler>("thrice");
  EXPECT_EQ(twice->name(), "twice");
  EXPECT_EQ(twice->version(), "1.0.0");
  EXPECT_EQ(twice->description(), "doubles");
  EXPECT_EQ(thrice->name(), "thrice");
  EXPECT_EQ(thrice->path(), "builtin:thrice");
  EXPECT_FALSE(thrice->loaded_from_library());
  EXPECT_FALSE(thrice->reentrant());
  EXPECT_EQ(twice->resolve_config(Json::object()), Json({{"factor", 2}}));
  EXPECT_THROW(twice->resolve_config({{"factr", 3}}), ConfigError);
  EXPECT_THROW(Plugin::from_class<Scaler>(""), UsageError);
  std::vector<Json> items;
  for (int i = 0; i < 100; ++i) items.push_back(i);
  for (const auto& [plugin, config, factor] :
       {std::tuple{twice, Json::object(), 2}, std::tuple{thrice, Json{{"factor", 3}}, 3}}) {
    Engine engine(plugin, config, {.threads = 2});
    const std::vector<Record> records = engine.map(items);
    ASSERT_EQ(records.size(), items.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
      ASSERT_TRUE(records[i].ok) << records[i].error;
      EXPECT_EQ(records[i].result.get<int>(), static_cast<int>(i) * factor);
    }
  }
}

TEST(PluginLoaderTest, RunsPluginCompiledIntoTheApplication) {
  const auto plugin = Plugin::from_class<Doubler>("doubler", "1", "x2");
  PluginInstance instance(plugin, Json::object());
  Context context(0, nullptr);
  Json result;
  std::string error;
  ASSERT_TRUE(instance.process(21, context, result, error));
  EXPECT_EQ(result, 42);
  EXPECT_FALSE(instance.process("text", context, result, error));
  EXPECT_NE(error.find("type must be number"), std::string::npos) << error;
}

// Counts its items; its summary says how many (a reduction, so a run's summaries are keyed by
// the stage's name, which defaults to the plugin's).
class Tally {
 public:
  explicit Tally(const Json&) {}
  Json process(const Json& item) {
    ++count_;
    return item;
  }
  void merge(Tally& other) { count_ += other.count_; }
  Json summary() const { return count_; }

 private:
  std::uint64_t count_ = 0;
};

// Each registration of one class carries its own name, version and description, whichever
// came first in the process: from_class, and detail::descriptor_of (what COREMAP_PLUGIN's entry
// function returns, and what from_descriptor wraps) under two names, interleaved. A run of each
// names its stage, and so its summary, after it (a descriptor that kept the class's first name
// named them all alike).
TEST(PluginLoaderTest, EachRegistrationOfAClassKeepsItsOwnName) {
  const auto first = Plugin::from_class<Tally>("first", "1.0.0", "the first");
  static const PluginDescriptor alpha_descriptor = detail::descriptor_of<Tally>("alpha", "2.0.0", "the alpha");
  static const PluginDescriptor beta_descriptor = detail::descriptor_of<Tally>("beta", "3.0.0", "the beta");
  const auto alpha = Plugin::from_descriptor(&alpha_descriptor, "builtin:alpha");
  const auto beta = Plugin::from_descriptor(&beta_descriptor, "builtin:beta");
  const auto second = Plugin::from_class<Tally>("second", "4.0.0", "the second");
  const std::vector<Json> items = test::numbers(10);
  for (const auto& [plugin, name, version, description] :
       {std::tuple{first, "first", "1.0.0", "the first"}, std::tuple{alpha, "alpha", "2.0.0", "the alpha"},
        std::tuple{beta, "beta", "3.0.0", "the beta"}, std::tuple{second, "second", "4.0.0", "the second"}}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(plugin->name(), name);
    EXPECT_EQ(plugin->version(), version);
    EXPECT_EQ(plugin->description(), description);
    EXPECT_TRUE(plugin->reduces());
    Engine engine(plugin, Json::object(), {.threads = 2});
    RunStats stats;
    engine.map(items, &stats);
    EXPECT_EQ(stats.summaries, (StageSummaries{{name, StageSummary::success(10)}}));
  }
  // The descriptors made first are untouched by the registrations after them.
  EXPECT_STREQ(alpha_descriptor.name, "alpha");
  EXPECT_STREQ(beta_descriptor.version, "3.0.0");
}

}  // namespace
}  // namespace coremap
