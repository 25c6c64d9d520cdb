#pragma once
/// `cxr study`: the reference study redone end to end, resumably:
/// explore -> tune the baseline (small grid) -> refit the best baseline on
/// train+val -> MobileNetV2 transfer (frozen, then fine-tuned; epochs chosen
/// on val) -> the same recipe refit on train+val -> evaluate every model on
/// test with CIs -> Grad-CAM examples, misclassified gallery and trust
/// checks -> one HTML report. docs/study.md says how the recipes were chosen.
#include <nlohmann/json.hpp>
#include <string>

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

/// Runs every step not yet done (study.json records finished steps) and
/// returns study.json's content.
nlohmann::json run_study(const StudyOptions& options);

}  // namespace cxr::study
