#pragma once
// Shared pieces of the thin CLI: one register_* function per subcommand
// (one file each), runtime and data flags, environment-derived defaults.
#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

#include "cxr/augment/augment.h"
#include "cxr/data/dataset.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"

namespace cxr::cli {

struct RuntimeFlags {
  std::string device = "auto";
  int threads = 0;
  /// fp32 | bf16 (bfloat16 autocast of the forward passes) | auto (bf16
  /// where the CPU computes it natively; common/precision.h). `cxr study`
  /// defaults to auto, the other commands to fp32.
  std::string precision = "fp32";
};
/// --device, --threads and, for commands that run a model, --precision.
void add_runtime_flags(CLI::App& cmd,
                       RuntimeFlags& flags,
                       bool runs_model = true);

/// Flag checks that run while CLI11 parses, before any file is read: a bad
/// value exits 2 with one line naming the flag. Each refuses NaN, which
/// CLI::Range lets through (every comparison with NaN is false).
/// A finite number in [lo, hi]; an open end excludes the bound.
CLI::Validator number_in(double lo,
                         double hi,
                         bool lo_open = false,
                         bool hi_open = false);
/// A whole number in [lo, hi] (no sign wrap-around for unsigned options).
CLI::Validator integer_in(long long lo, long long hi);
/// One of `choices` (listed in the message).
CLI::Validator one_of(const std::vector<std::string>& choices);
/// A seed: a whole number in [0, 2^63 - 1].
CLI::Validator seed_value();

/// An option whose --help shows its default (most of cxr's options).
template <typename T>
CLI::Option* add_default(CLI::App& cmd,
                         const std::string& name,
                         T& value,
                         const std::string& help) {
  return cmd.add_option(name, value, help)->capture_default_str();
}
/// The same, checked while parsing (number_in, integer_in, one_of,
/// seed_value, CLI::Range).
template <typename T>
CLI::Option* add_checked(CLI::App& cmd,
                         const std::string& name,
                         T& value,
                         const std::string& help,
                         const CLI::Validator& check) {
  return add_default(cmd, name, value, help)->check(check);
}
/// Applies --threads and --precision (process-wide); the device name is
/// validated later.
void apply_runtime(const RuntimeFlags& flags);

/// The dataset folder as the positional DATA of explore, train and tune.
void add_data_folder(CLI::App& cmd, std::string& data);
/// The positional RUN (required) of the commands that read a run.
void add_run_folder(CLI::App& cmd, std::string& run);
/// --data of the commands that read a run's data (default: the run's own).
void add_run_data(CLI::App& cmd, std::string& data);
/// --no-cache of the commands that read a run's dataset (cache_dir_unless).
void add_no_cache_flag(CLI::App& cmd, bool& no_cache);
/// The augmentation ranges (--width-shift, --rotation, --zoom): train's, and
/// explore's --augment-preview.
void add_augment_flags(CLI::App& cmd, augment::AugmentOptions& options);

/// Data flags shared by explore/train/study: --size, --positive, split
/// fractions, --seed (split), --skip-bad, --cache-dir, --no-cache.
struct DataFlags {
  data::DatasetOptions options;
  bool no_cache = false;
};
void add_data_flags(CLI::App& cmd, DataFlags& flags);
/// Final DatasetOptions (fills the default cache dir unless --no-cache).
data::DatasetOptions resolve_data(const DataFlags& flags);
/// What every command that reads a dataset does after parsing: the data
/// flags resolved (resolve_data), the dataset folder (`data`, else
/// default_data_dir()) and the decoding threads of --threads.
data::DatasetOptions finish_data(const DataFlags& flags,
                                 const std::string& data,
                                 const RuntimeFlags& runtime);
/// The decoded-image cache of a command that reads a run's dataset and has
/// only --no-cache: "" with it, else default_cache_dir().
std::string cache_dir_unless(bool no_cache);

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
void register_serve(CLI::App& app);

/// Runs `body`; a DataError whose hint says "pass --skip-bad" is re-worded
/// for `command`, where that flag does not apply (calibrate and evaluate
/// --ood-sets score every image of a run's split, so none may be left out;
/// explain takes it only with --split): "(cxr COMMAND WHY; fix or replace
/// the file)".
void without_skip_bad_hint(
    const std::string& command,
    const std::function<void()>& body,
    const std::string& why =
        "scores every image of the run's split and has no --skip-bad");

/// The run folder's lock (train::DirLock, as cxr train takes it) for a
/// command that writes into the run: `out` empty (the command's default
/// folder is inside the run) or inside it. A concurrent train, calibrate
/// or evaluate of the same run then fails at once with IoError (exit 5)
/// instead of mixing files. Null when nothing is written into the run, or
/// when `run` is not a folder (the command reports that itself; locking
/// would create it).
std::unique_ptr<train::DirLock> lock_run_for_writing(const std::string& run,
                                                     const std::string& out);

/// Prints one line per file --skip-bad left out ("cxr: skipped <reason>",
/// as train lists them) from a JSON array of {file, reason}.
void list_skipped(const nlohmann::json& skipped);
/// The same from a typed result (evaluate, explain).
void list_skipped(const std::vector<data::SkippedImage>& skipped);

/// The command line cxr was started with (recorded in run folders).
void set_command_line(int argc, char** argv);
const std::string& command_line();

/// Flags of the model and the training loop (cmd_train.cpp), shared with
/// tune and study.
void add_model_train_flags(CLI::App& cmd, train::RunOptions& options);
/// Checks of the model/training flags that need the parsed values together
/// (after parsing, before data is read): --momentum only with sgd, --epochs
/// 0 only for a transfer model's fine-tune-only run. `optimizer_varies`:
/// a search space varies the optimizer, so --momentum may apply.
void check_model_train_flags(const CLI::App& cmd,
                             const train::RunOptions& options,
                             bool optimizer_varies = false);

}  // namespace cxr::cli
