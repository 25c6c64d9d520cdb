#pragma once
/// `cxr train` end to end: load data, compute normalisation on train+val,
/// build the model (optionally with ImageNet weights), fit with resumable
/// checkpoints, choose the decision threshold on validation, write the run.
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/infer/ood.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/classifier.h"
#include "cxr/train/trainer.h"

namespace cxr::train {

struct RunOptions {
  data::DatasetOptions data;
  models::ModelConfig model;
  TrainOptions train;
  /// Keras .h5 ImageNet weights for a transfer backbone ("" = random init).
  std::string weights;
  /// Run directory to create.
  std::string out_dir = "runs/baseline";
  /// Continue an interrupted run in out_dir (state.pt). Options named in
  /// `flags_given` must equal the saved run's (ConfigError otherwise); the
  /// rest are taken from the saved run.
  bool resume = false;
  /// Replace a finished (or interrupted) run in out_dir. The new run is
  /// written beside it (OUT.partial) and swapped in only when complete, so
  /// an interrupted retrain leaves the old run intact.
  bool overwrite = false;
  /// Stop after this many epochs of the schedule (0 = run it whole): a refit
  /// follows the schedule of the trial it copies and ends at the epoch whose
  /// weights, threshold and temperature that trial kept (docs/tuning.md).
  int stop_after_epoch = 0;
  /// Command-line flags the user gave ("--lr", "--size", ...), for resume.
  std::set<std::string> flags_given;
  /// "auto", "cpu", "cuda", ...
  std::string device = "auto";
  /// Choose the threshold on validation for this sensitivity, in (0, 1]
  /// (unset: 0.5, unless another rule is given).
  std::optional<double> target_sensitivity;
  /// Choose the balanced threshold on validation (max Youden's J).
  bool balanced_threshold = false;
  /// A refit's threshold: the one a run trained on train chose on validation
  /// ("" = none). The run must be finished and of the same architecture.
  std::string threshold_from;
  /// The OOD detector fitted when training ends (infer/fit_trust.h).
  infer::OodOptions ood;
  /// The command line that started the run (recorded for the model card).
  std::string command;
};

/// Validation scores of the kept weights at the run's decision threshold.
struct ValScores {
  double accuracy = NAN, precision = NAN, recall = NAN, specificity = NAN,
         auc = NAN;
};

/// What train_run made: the run folder and, typed, what its config.json
/// records about the training (callers need not decode the JSON).
struct TrainResult {
  std::string run_dir;
  std::string arch;
  double seconds = 0;
  double images_per_second = 0;
  std::string device;
  int best_epoch = 0;  ///< epoch whose weights the run kept
  int epochs_run = 0;
  /// Transfer: epochs of the frozen phase that ran (set by train_run from
  /// the history; not in config.json).
  int frozen_epochs = 0;
  double best_val_loss = NAN;    ///< NaN without validation
  std::optional<ValScores> val;  ///< with a validation split
  double threshold = 0.5;
  std::string threshold_rule;
  infer::Calibration calibration;
  double ood_threshold = NAN;
  std::string ood_threshold_rule;
  /// config.json as written (model, train, data, result, calibration, ood).
  nlohmann::json config;

  /// config.json's content (what train_run returned before it was typed).
  nlohmann::json to_json() const { return config; }
  /// Reads the fields above from a run's config.json.
  static TrainResult from_config(const nlohmann::json& config,
                                 const std::string& run_dir);
};
/// `nlohmann::json j = train_run(...)` keeps working (config.json).
void to_json(nlohmann::json& j, const TrainResult& r);

/// What `cxr train` prints when a run is written: time, speed, best epoch,
/// validation scores, threshold, calibration, OOD warning, files.
std::string format_summary(const TrainResult& result);

/// Trains and writes the run directory.
/// `preloaded` skips loading when the caller already has the dataset.
TrainResult train_run(const RunOptions& options,
                      const data::Dataset* preloaded = nullptr);

/// Every setting that shapes a run's model, as JSON ({model, train,
/// weights, data}): resume compares it with the saved run's, tune
/// fingerprints each trial with it.
nlohmann::json run_settings(const RunOptions& options);
/// The flag that sets a setting of run_settings() by its JSON pointer
/// ("/train/lr" -> "--lr"); "" when no flag sets it.
std::string flag_of_setting(const std::string& pointer);
/// A setting's value as it would be typed on the command line.
std::string flag_text(const nlohmann::json& value);

/// Data description stored in a run (root, layout, size, seed, counts,
/// normalisation), so evaluate/predict can reload the same splits.
nlohmann::json describe_data(const data::Dataset& ds,
                             const data::DatasetOptions& options);

/// DatasetOptions that reproduce the run's splits (root overridable).
data::DatasetOptions data_options_from(const nlohmann::json& data,
                                       const std::string& root_override,
                                       const std::string& cache_dir);

}  // namespace cxr::train
