#pragma once
/// `cxr study`: the reference study redone end to end, resumably:
/// explore -> tune the baseline (small grid) -> refit the best baseline on
/// train+val -> MobileNetV2 transfer (frozen, then fine-tuned; epochs chosen
/// on val) -> the same recipe refit on train+val -> evaluate every model on
/// test with CIs -> Grad-CAM examples, misclassified gallery and trust
/// checks -> one HTML report. docs/study.md says how the recipes were chosen.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cxr/data/dataset.h"
#include "cxr/train/run.h"

namespace cxr::study {

struct StudyOptions {
  data::DatasetOptions data;
  std::string out_dir = "study";
  /// Keras MobileNetV2 ImageNet weights, checked (readable HDF5 with
  /// MobileNetV2's layers) before the first step. "" is refused unless
  /// random_init is set.
  std::string weights;
  /// Train MobileNetV2 from random initialisation (--no-weights): asked for
  /// explicitly, never the result of a missing weights file.
  bool random_init = false;
  /// Skip the transfer model.
  bool transfer = true;
  /// Input size of the transfer model (the baseline uses data.size).
  int transfer_size = 224;
  /// A few minutes: small images, one trial, few epochs (smoke test).
  bool quick = false;
  /// The study's full grids (54 baseline trials; hours on a CPU).
  bool full_grid = false;
  /// ../shared (ImageNet photos, DICOM files) for the OOD evaluation sets;
  /// "" = only the sets made from the test split and synthetic ones.
  std::string shared_dir;
  std::string device = "auto";
  int threads = 0;
  bool progress = true;
};

/// The study's recipes (docs/study.md): what each step trains and how
/// long, chosen on validation in GPU sessions that tried each candidate
/// with three seeds, sized to finish in about an hour on a 2-core CPU.
struct Plan {
  /// Baseline input size (px).
  int size = 128;
  /// Baseline search space (tune::parse_space tokens).
  std::vector<std::string> baseline_grid;
  std::vector<int> baseline_filters;
  int baseline_epochs = 30;
  /// Learning-rate schedule of every training step.
  std::string schedule = "cosine";
  /// The baseline search stops starting trials after this; unset: no limit.
  std::optional<double> tune_budget_minutes;
  /// MobileNetV2 input size (px), frozen-head and fine-tuning epochs.
  int transfer_size = 224;
  int frozen_epochs = 3;
  int fine_tune_epochs = 20;
  /// Fine-tuning trains the backbone from this Keras layer on (the earlier
  /// blocks stay frozen, as in the head phase); "" = the whole backbone.
  std::string unfreeze_from;
  /// Grad-CAM example images per model (both classes).
  int explain_examples = 6;
  /// Bootstrap replicates of the test CIs.
  int bootstrap = 2000;
};
/// The plan for `options` (--quick, --full-grid, --size, --transfer-size).
Plan make_plan(const StudyOptions& options);

/// The MobileNetV2 ImageNet weights cxr study uses when --weights is not
/// given: ../shared/weights/mobilenet_v2_1.0_224_imagenet_notop.h5 (or
/// shared/... from the repository root) when present, else "".
std::string default_weights();

/// What run_study did; study.json holds to_json().
struct StudyResult {
  std::string out_dir;
  /// Study time over every run of it (resumed runs add up).
  double minutes = 0;
  std::string report_path;
  /// study.json's content (steps, models, tuning, options).
  nlohmann::json study;
  nlohmann::json to_json() const { return study; }
};

/// What `cxr study` prints when it finishes.
std::string format_summary(const StudyResult& result);

/// Runs every step not yet done (study.json records finished steps).
StudyResult run_study(const StudyOptions& options);

}  // namespace cxr::study
