#include "cli.h"

#include <cstdlib>
#include <filesystem>

#include "cxr/common/runtime.h"

namespace cxr::cli {

void add_runtime_flags(CLI::App& cmd, RuntimeFlags& flags) {
  cmd.add_option("--device", flags.device,
                 "auto (CUDA when available), cpu, cuda or cuda:N")
      ->capture_default_str();
  cmd.add_option("--threads", flags.threads, "CPU threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

void apply_runtime(const RuntimeFlags& flags) {
  configure_threads(flags.threads);
}

void add_data_flags(CLI::App& cmd, DataFlags& f) {
  auto& o = f.options;
  cmd.add_option("--size", o.size, "image side length in pixels")
      ->capture_default_str();
  cmd.add_option("--positive", o.positive, "positive class folder name")
      ->capture_default_str();
  cmd.add_option("--train-fraction", o.train_fraction,
                 "flat layout: share of each class for training")
      ->capture_default_str();
  cmd.add_option("--val-fraction", o.val_fraction,
                 "flat layout: share for validation (test gets the rest)")
      ->capture_default_str();
  cmd.add_option("--split-seed", o.seed, "flat layout: seed of the split")
      ->capture_default_str();
  cmd.add_flag("--skip-bad", o.skip_bad,
               "skip unreadable images (listed) instead of stopping");
  cmd.add_option("--cache-dir", o.cache_dir,
                 "decoded-image cache (default ~/.cache/cxr)");
  cmd.add_flag("--no-cache", f.no_cache, "do not read or write the cache");
}

data::DatasetOptions resolve_data(const DataFlags& f) {
  data::DatasetOptions o = f.options;
  if (f.no_cache) {
    o.cache_dir.clear();
  } else if (o.cache_dir.empty()) {
    o.cache_dir = default_cache_dir();
  }
  return o;
}

std::string default_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    return std::string(x) + "/cxr";
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return std::string(h) + "/.cache/cxr";
  }
  return ".cxr-cache";
}

namespace {
std::string& command_line_storage() {
  static std::string line;
  return line;
}
}  // namespace

void set_command_line(int argc, char** argv) {
  std::string s = "cxr";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool plain =
        !a.empty() && a.find_first_of(" \t\"'\\$`") == std::string::npos;
    s += " " + (plain ? a : "'" + a + "'");
  }
  command_line_storage() = s;
}

const std::string& command_line() {
  return command_line_storage();
}

std::string default_shared_dir() {
  for (const char* c : {"../shared", "shared"}) {
    if (std::filesystem::is_directory(c)) return c;
  }
  return "";
}

std::string default_data_dir() {
  if (const char* d = std::getenv("CXR_DATA"); d && *d) return d;
  for (const char* c : {"../shared/data/cxr-seed", "shared/data/cxr-seed"}) {
    if (std::filesystem::is_directory(c)) return c;
  }
  return "";
}

}  // namespace cxr::cli
