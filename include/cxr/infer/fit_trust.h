#pragma once
/// Makes a trained run trustworthy to use: fits its calibration (temperature
/// scaling on validation logits, or carried over from the train-only run a
/// refit follows) and its out-of-distribution detector (on the train split,
/// threshold on validation), and writes the model card. `cxr train` calls
/// this when it finishes; `cxr calibrate` calls it for an existing run.
#include <nlohmann/json.hpp>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/infer/ood.h"

namespace cxr::infer {

struct TrustOptions {
  /// A run trained on train only, of the same recipe, whose temperature and
  /// detector threshold ratio a run trained on train+val carries over
  /// ("" = fit on this run's own validation split; a train+val run without
  /// one gets no calibration and a threshold from its training images).
  std::string from;
  OodOptions ood;
  std::string device = "auto";
  /// Data root ("" = the run's) and decoded-image cache.
  std::string data_root;
  std::string cache_dir;
  int batch_size = 64;
};

/// Fits and writes DIR/ood.safetensors, config.json's "calibration", "ood" and
/// "threshold.calibrated", and DIR/model-card.md. `preloaded` must hold the
/// run's splits at its input size. Returns the new config.json.
nlohmann::json fit_trust(const std::string& dir,
                         const TrustOptions& options,
                         const data::Dataset* preloaded = nullptr);

/// Two lines on a run's calibration and OOD warning, from the config.json
/// fit_trust returns (what cxr calibrate prints).
std::string format_trust_summary(const nlohmann::json& config);

/// Writes DIR/model-card.md from config.json and, where present,
/// eval-test/metrics.json and the explain folders' trust checks.
void write_model_card(const std::string& dir);

}  // namespace cxr::infer
