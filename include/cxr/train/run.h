#pragma once
/// `cxr train` end to end: load data, compute normalisation on train+val,
/// build the model (optionally with ImageNet weights), fit with resumable
/// checkpoints, choose the decision threshold on validation, write the run.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/infer/ood.h"
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
  /// Continue an interrupted run in out_dir (state.pt).
  bool resume = false;
  /// "auto", "cpu", "cuda", ...
  std::string device = "auto";
  /// Choose the threshold on validation for this sensitivity (0 = use 0.5).
  double target_sensitivity = 0.0;
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

/// Trains and writes the run directory; returns config.json's content.
/// `preloaded` skips loading when the caller already has the dataset.
nlohmann::json train_run(const RunOptions& options,
                         const data::Dataset* preloaded = nullptr);

/// Data description stored in a run (root, layout, size, seed, counts,
/// normalisation), so evaluate/predict can reload the same splits.
nlohmann::json describe_data(const data::Dataset& ds,
                             const data::DatasetOptions& options);

/// DatasetOptions that reproduce the run's splits (root overridable).
data::DatasetOptions data_options_from(const nlohmann::json& data,
                                       const std::string& root_override,
                                       const std::string& cache_dir);

}  // namespace cxr::train
