#include "cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/precision.h"
#include "cxr/common/runtime.h"

namespace cxr::cli {

void add_runtime_flags(CLI::App& cmd, RuntimeFlags& flags, bool runs_model) {
  add_default(cmd, "--device", flags.device,
              "auto (CUDA when available), cpu, cuda or cuda:N");
  add_checked(cmd, "--threads", flags.threads,
              "CPU threads, 0..1024 (0 = all cores)", integer_in(0, 1024));
  if (runs_model) {
    add_checked(cmd, "--precision", flags.precision,
                "fp32, bf16 (bfloat16 autocast of the forward passes; "
                "weights, loss and scores stay float32), or auto: bf16 on "
                "CPUs with AVX-512 BF16 or AMX, fp32 elsewhere "
                "(docs/performance.md)",
                one_of({"auto", "fp32", "bf16"}));
  }
}

namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

/// Parses all of `text` as a number; false for trailing junk or overflow.
bool parse_double(const std::string& text, double* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return false;
  *out = v;
  return true;
}

}  // namespace

CLI::Validator number_in(double lo, double hi, bool lo_open, bool hi_open) {
  const std::string range = std::string(lo_open ? "(" : "[") + num(lo) + ", " +
                            num(hi) + (hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        const bool ok = parse_double(text, &v) && std::isfinite(v) &&
                        (lo_open ? v > lo : v >= lo) &&
                        (hi_open ? v < hi : v <= hi);
        return ok ? std::string()
                  : "must be a number in " + range + ", got " + text;
      },
      "in " + range);
}

CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(text.c_str(), &end, 10);
        const bool ok = !text.empty() && end == text.c_str() + text.size() &&
                        errno == 0 && v >= lo && v <= hi;
        return ok ? std::string()
                  : "must be a whole number in " + range + ", got " + text;
      },
      "in " + range);
}

CLI::Validator one_of(const std::vector<std::string>& choices) {
  std::string list;
  for (size_t i = 0; i < choices.size(); ++i) {
    list += (i == 0                    ? ""
             : i + 1 == choices.size() ? " or "
                                       : ", ") +
            choices[i];
  }
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        for (const auto& c : choices) {
          if (text == c) return std::string();
        }
        return "unknown value '" + text + "'; use " + list;
      },
      list);
}

CLI::Validator seed_value() {
  return integer_in(0, std::numeric_limits<long long>::max());
}

void apply_runtime(const RuntimeFlags& flags) {
  configure_threads(flags.threads);
  set_precision(parse_precision(flags.precision, flags.device));
}

void add_data_folder(CLI::App& cmd, std::string& data) {
  cmd.add_option(
      "data", data,
      "dataset folder (default: $CXR_DATA or ../shared/data/cxr-seed)");
}

void add_run_folder(CLI::App& cmd, std::string& run) {
  cmd.add_option("run", run, "run folder from cxr train")->required();
}

void add_run_data(CLI::App& cmd, std::string& data) {
  cmd.add_option("--data", data,
                 "dataset folder (default: the one the run was trained on)");
}

void add_no_cache_flag(CLI::App& cmd, bool& no_cache) {
  cmd.add_flag("--no-cache", no_cache, "do not use the decoded cache");
}

void add_augment_flags(CLI::App& cmd, augment::AugmentOptions& a) {
  add_default(cmd, "--width-shift", a.width_shift,
              "augmentation: max width shift (fraction)");
  add_default(cmd, "--rotation", a.rotation_deg,
              "augmentation: max rotation (degrees)");
  add_default(cmd, "--zoom", a.zoom, "augmentation: max zoom (fraction)");
}

void add_data_flags(CLI::App& cmd, DataFlags& f) {
  auto& o = f.options;
  add_default(cmd, "--size", o.size, "image side length in pixels");
  add_default(cmd, "--positive", o.positive, "positive class folder name");
  // Only a flat layout (class folders without split folders) is split by
  // these. Each share alone is checked while parsing (NaN too); their sum
  // is checked with the layout (data::load_dataset).
  const auto flat = [](const std::string& help) {
    return "flat layout: " + help;
  };
  add_checked(cmd, "--train-fraction", o.train_fraction,
              flat("share of each class for training"),
              number_in(0, 1, true, true));
  add_checked(cmd, "--val-fraction", o.val_fraction,
              flat("share for validation (test gets the rest)"),
              number_in(0, 1, false, true));
  add_checked(cmd, "--split-seed", o.seed, flat("seed of the split"),
              seed_value());
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

data::DatasetOptions finish_data(const DataFlags& flags,
                                 const std::string& data,
                                 const RuntimeFlags& runtime) {
  data::DatasetOptions o = resolve_data(flags);
  o.root = data.empty() ? default_data_dir() : data;
  o.threads = runtime.threads;
  return o;
}

std::string cache_dir_unless(bool no_cache) {
  return no_cache ? "" : default_cache_dir();
}

void without_skip_bad_hint(const std::string& command,
                           const std::function<void()>& body,
                           const std::string& why) {
  try {
    body();
  } catch (const DataError& e) {
    std::string msg = e.what();
    // The two hints the library gives (dataset loading, file prediction).
    for (const std::string hint : {", or pass --skip-bad to load the rest",
                                   " (pass --skip-bad to predict the rest)"}) {
      const auto at = msg.find(hint);
      if (at == std::string::npos) continue;
      msg = msg.substr(0, at) + " (cxr " + command + " " + why +
            "; fix or replace the file)" + msg.substr(at + hint.size());
      throw DataError(msg);
    }
    throw;
  }
}

std::unique_ptr<train::DirLock> lock_run_for_writing(const std::string& run,
                                                     const std::string& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (run.empty() || !fs::is_directory(run, ec)) return nullptr;
  if (!out.empty()) {
    const fs::path r = fs::weakly_canonical(run, ec);
    const fs::path o = fs::weakly_canonical(out, ec);
    const auto rel = o.lexically_relative(r);
    if (ec || rel.empty() || *rel.begin() == "..") return nullptr;
  }
  return std::make_unique<train::DirLock>(run);
}

void list_skipped(const nlohmann::json& skipped) {
  for (const auto& b : skipped) {
    std::cerr << "cxr: skipped " << b["reason"].get<std::string>() << "\n";
  }
}

void list_skipped(const std::vector<data::SkippedImage>& skipped) {
  for (const auto& b : skipped) {
    std::cerr << "cxr: skipped " << b.reason << "\n";
  }
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
