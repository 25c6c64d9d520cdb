#pragma once
/// `cxr evaluate` and `cxr predict`: honest numbers for a trained run
/// (confusion matrix, metrics with bootstrap CIs, ROC) and predictions for
/// new images.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cxr/data/dataset.h"
#include "cxr/infer/predictor.h"
#include "cxr/metrics/metrics.h"

namespace cxr::evaluate {

struct EvalOptions {
  /// Run directory written by cxr train.
  std::string run_dir;
  /// Split to evaluate: train, val or test.
  std::string split = "test";
  /// Data root; "" = the one recorded in the run.
  std::string data_root;
  /// Fixed decision threshold on P(positive) (overrides the run's).
  std::optional<double> threshold;
  /// Choose the threshold on the validation split for this sensitivity.
  std::optional<double> target_sensitivity;
  /// Choose the balanced threshold (max Youden's J) on the validation split.
  bool balanced_threshold = false;
  /// Bootstrap replicates for the 95 % CIs.
  int bootstrap = 2000;
  /// Output folder; "" = RUN/eval-<split>.
  std::string out_dir;
  std::string device = "auto";
  std::string cache_dir;
  /// Leave unreadable images out (listed in metrics.json "skipped") instead
  /// of stopping at the first with a DataError naming it.
  bool skip_bad = false;
  /// Images per forward pass (with --nproc also the unit of the shards).
  int batch_size = 32;
};

/// ECE (with a percentile-bootstrap 95 % CI), Brier score, log loss and the
/// reliability table of probabilities on a split.
struct CalibrationScore {
  metrics::Interval ece;
  double brier = 0, nll = 0;
  std::vector<metrics::CalibrationBin> table;
};

/// What evaluate_run measured: metrics.json as a type.
struct EvaluateResult {
  std::string split, run, model;
  std::string positive, negative;
  /// Metrics with CIs at the threshold used (on the raw score).
  metrics::MetricsWithCi metrics;
  std::string threshold_rule;
  /// The threshold on the calibrated P(positive).
  double threshold_calibrated = 0.5;
  /// Wilson 95 % interval of the accuracy (low, high).
  metrics::Interval accuracy_wilson;
  std::vector<data::SkippedImage> skipped;
  /// How wide the CIs are and what that means.
  std::string note;
  metrics::RocCurve roc;
  struct Calibration {
    std::string method, source, note;
    double temperature = 1;
    int bins = 0;
    CalibrationScore raw, calibrated;
  } calibration;
  struct Ood {
    bool detector = false;
    int64_t flagged = 0;
    double flag_rate = 0;
    std::string note;
  } ood;

  /// metrics.json.
  nlohmann::json to_json() const;
};

/// Evaluates and writes metrics.json, predictions.csv, confusion.png,
/// roc.png and reliability.png (calibration before and after), with the OOD
/// flag rate on the split; on the test split also rewrites the run's
/// model-card.md.
EvaluateResult evaluate_run(const EvalOptions& options);

/// Printable summary: confusion matrix, metrics with CIs, calibration, OOD
/// flags, skipped images and the note.
std::string format_summary(const EvaluateResult& result);

struct PredictOptions {
  std::string run_dir;
  /// Files or folders (folders are searched for PNG/JPEG/BMP, recursively).
  std::vector<std::string> inputs;
  /// Decision threshold on the calibrated P(positive) (default: the run's).
  std::optional<double> threshold;
  /// Output CSV and JSON paths ("" = do not write).
  std::string csv_path;
  std::string json_path;
  std::string device = "auto";
  int batch_size = 32;
  /// Continue past unreadable images (listed in the output as errors).
  bool skip_bad = false;
};

using infer::Prediction;

/// Predicts every image; writes CSV/JSON when asked.
std::vector<Prediction> predict_files(const PredictOptions& options,
                                      std::string* positive_name = nullptr);

}  // namespace cxr::evaluate
