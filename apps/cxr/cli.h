#pragma once
// Shared pieces of the thin CLI: one register_* function per subcommand
// (one file each), runtime and data flags, environment-derived defaults.
#include <CLI/CLI.hpp>

#include <string>

#include "cxr/data/dataset.h"
#include "cxr/train/run.h"

namespace cxr::cli {

struct RuntimeFlags {
  std::string device = "auto";
  int threads = 0;
};
void add_runtime_flags(CLI::App& cmd, RuntimeFlags& flags);
/// Applies --threads; returns the device name (validated later).
void apply_runtime(const RuntimeFlags& flags);

/// Data flags shared by explore/train/study: --size, --positive, split
/// fractions, --seed (split), --skip-bad, --cache-dir, --no-cache.
struct DataFlags {
  data::DatasetOptions options;
  bool no_cache = false;
};
void add_data_flags(CLI::App& cmd, DataFlags& flags);
/// Final DatasetOptions (fills the default cache dir unless --no-cache).
data::DatasetOptions resolve_data(const DataFlags& flags);

/// $XDG_CACHE_HOME/cxr or ~/.cache/cxr (the CLI owns environment lookups).
std::string default_cache_dir();
/// $CXR_DATA, else ../shared/data/cxr-seed when present, else "".
std::string default_data_dir();
/// ../shared or shared when present, else "".
std::string default_shared_dir();

void register_explore(CLI::App& app);
void register_train(CLI::App& app);
void register_evaluate(CLI::App& app);
void register_predict(CLI::App& app);
void register_explain(CLI::App& app);
void register_tune(CLI::App& app);
void register_study(CLI::App& app);
void register_report(CLI::App& app);
void register_calibrate(CLI::App& app);

/// Two lines on a run's calibration and OOD warning (config.json).
std::string calibration_summary(const nlohmann::json& config);

/// The command line cxr was started with (recorded in run folders).
void set_command_line(int argc, char** argv);
const std::string& command_line();

/// Flags of the model and the training loop (cmd_train.cpp), shared with
/// tune and study.
void add_model_train_flags(CLI::App& cmd, train::RunOptions& options);

}  // namespace cxr::cli
