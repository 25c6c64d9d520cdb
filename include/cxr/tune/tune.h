#pragma once
/// `cxr tune`: hyper-parameter search (full grid, random, sequential) with a
/// resumable trial store, ranking by a validation metric, and the study's
/// final refit on train+val for the best configuration's best epoch count.
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cxr/data/dataset.h"
#include "cxr/metrics/metrics.h"
#include "cxr/train/run.h"

namespace cxr::tune {

/// One tunable parameter: a list of values, or a numeric range for random
/// search ("lr=1e-5..1e-2": log-uniform for lr, uniform otherwise).
struct ParamSpec {
  std::string name;
  std::vector<std::string> values;
  bool is_range = false;
  double low = 0, high = 0;
  bool log_scale = false;
};

struct SearchSpace {
  std::vector<ParamSpec> params;  ///< in the order given (sequential order)
};

/// Parameter names cxr tune understands (see apply_params).
const std::vector<std::string>& tunable_names();

/// Parses tokens like "filters=8,32,64" "lr=1e-3,1e-4" "lr=1e-5..1e-2".
/// Throws ConfigError naming the bad token.
SearchSpace parse_space(const std::vector<std::string>& tokens);
/// Reads {"filters": [8, 32], "lr": "1e-5..1e-2", ...} (JSON keeps order).
SearchSpace read_space_file(const std::string& path);

/// A trial's parameters, name -> value text (sorted by name).
using Params = std::map<std::string, std::string>;
/// Canonical "a=1;b=2" key identifying a trial.
std::string trial_key(const Params& p);

/// Cartesian product in the given order (ranges are refused).
std::vector<Params> grid_trials(const SearchSpace& space);
/// `n` samples, deterministic for `seed` (mt19937_64).
std::vector<Params> random_trials(const SearchSpace& space,
                                  int n,
                                  uint64_t seed);

/// Momentum is read by sgd alone (adam and rmsprop ignore it), so a trial
/// that does not use sgd (its optimizer, else `base_optimizer`) loses its
/// momentum parameter: trials that differed only in it become one trial
/// with one key.
Params without_unused_params(const Params& p,
                             const std::string& base_optimizer);
/// Refuses a space that gives momentum values although no trial can use
/// sgd (ConfigError naming momentum and the optimizers in play).
void check_space_applies(const SearchSpace& space,
                         const std::string& base_optimizer);

/// Applies parameters to run options. filters=F means blocks F,2F,4F,4F;
/// "32-64-128" lists them. Throws ConfigError for unknown names or values.
void apply_params(const Params& p, train::RunOptions& options);

struct TuneOptions {
  /// grid | random | sequential
  std::string mode = "grid";
  SearchSpace space;
  /// random: number of trials.
  int trials = 10;
  uint64_t seed = 42;
  /// val_loss | val_accuracy | val_auc | val_recall
  std::string metric = "val_loss";
  /// Stop starting new trials after this many minutes (> 0); unset: no
  /// limit.
  std::optional<double> budget_minutes;
  /// Train the best configuration on train+val and evaluate it on test.
  bool refit = false;
  std::string out_dir = "tune";
  /// Start the search afresh in out_dir (its trials are deleted). Without
  /// it, stored trials are reused only when every setting that shapes them
  /// matches (TrialResult::settings); otherwise run_tune refuses.
  bool overwrite = false;
  /// Options every trial starts from (model, training, data, device).
  train::RunOptions base;
  bool progress = true;
};

struct TrialResult {
  int index = 0;
  Params params;
  std::string key;
  std::string run_dir;
  int best_epoch = 0;
  int frozen_epochs = 0;  ///< transfer: epochs of phase 1 that ran
  double val_loss = NAN, val_accuracy = NAN, val_precision = NAN,
         val_recall = NAN, val_auc = NAN;
  double seconds = 0;
  /// Everything that shaped the trial: train::run_settings() of its
  /// options, with the data described by train::describe_data().
  nlohmann::json settings;
  nlohmann::json to_json() const;
  static TrialResult from_json(const nlohmann::json& j);
  /// The value of `metric`, oriented so that larger is better.
  double score(const std::string& metric) const;
};

/// The refit of `best` on train+val, from the options the search started
/// from: the trial's parameters and schedule (same epochs per phase, so the
/// same learning rate at each epoch), stopped after the trial's best epoch,
/// whose weights, threshold and temperature the trial kept; the threshold
/// and temperature are carried over from the trial (docs/tuning.md). Used by
/// `cxr tune --refit` and `cxr study`.
train::RunOptions refit_options(const train::RunOptions& base,
                                const TrialResult& best);

/// `cxr tune --refit`: the best configuration trained on train+val and
/// evaluated on test.
struct RefitResult {
  std::string run_dir;
  int epochs = 0;
  metrics::Interval accuracy, recall, specificity, auc;  ///< on test
};

/// What run_tune found; best.json holds to_json().
struct TuneResult {
  std::string metric;
  std::string mode;
  int trials = 0;          ///< distinct trials of this search
  int trials_run_now = 0;  ///< of them, trained by this call (not reused)
  std::optional<double> budget_minutes;  ///< best.json: 0 when unset
  bool budget_exhausted = false;
  double minutes = 0;
  TrialResult best;
  std::optional<RefitResult> refit;
  std::string out_dir;  ///< not in best.json

  nlohmann::json to_json() const;
};

/// What `cxr tune` prints: the best trial, the refit's test scores, files.
std::string format_summary(const TuneResult& result);

/// The search space `cxr tune` explores when none is given: sized for about
/// 15 minutes on a 2-core CPU at 128 px (docs/tuning.md has the measured
/// minutes per trial).
std::vector<std::string> default_space(const std::string& arch);
/// The epochs per trial `cxr tune` uses unless --epochs is given.
inline constexpr int kDefaultEpochs = 25;

/// Runs the search (resuming finished trials from OUT/trials.jsonl) and
/// writes trials.csv, results.md, best.json (and refit/ when asked).
TuneResult run_tune(const TuneOptions& options,
                    const data::Dataset* preloaded = nullptr);

}  // namespace cxr::tune
