#pragma once
/// The one inference path: a Predictor loads a run folder once (weights,
/// preprocessing, threshold, calibration, OOD detector) and scores decoded
/// images or files. `cxr predict`, `evaluate`, `explain`, `study` and
/// `serve` all use it.
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cxr/data/image_io.h"
#include "cxr/infer/input_check.h"
#include "cxr/infer/ood.h"
#include "cxr/infer/run_config.h"

namespace cxr::infer {

struct Prediction {
  std::string file;  ///< source file ("" for in-memory images)
  double logit = NAN;
  double p_raw = NAN;     ///< sigmoid(logit): the model's own probability
  double p = NAN;         ///< calibrated P(positive) (= p_raw without T)
  bool positive = false;  ///< decision at the run's threshold
  std::string decision;   ///< class name, or "" on error
  /// Detector score (NaN when the run has no detector).
  double ood_score = NAN;
  /// false when an input check or the detector flags the image.
  bool in_distribution = true;
  /// Why it was flagged (input checks, then the detector).
  std::vector<std::string> reasons;
  std::string error;  ///< non-empty when the image could not be read
  /// With PredictOptions::maps: Grad-CAM evidence for the positive and the
  /// negative class, [S, S] float32 in [0, 1] at the model's input size
  /// (undefined otherwise, and on error).
  torch::Tensor positive_map, negative_map;
};

struct PredictOptions {
  /// Also compute both Grad-CAM maps (one forward pass with a graph, and
  /// the gradient from the logit back to `layer`).
  bool maps = false;
  /// Grad-CAM layer; "" = the model's default (its last feature map).
  std::string layer;
};

class Predictor {
 public:
  /// Loads DIR (see read_run_config/load_model) and ood.safetensors (ood.pt
  /// in older run folders) when the run has a detector. Throws ModelError
  /// naming the file and the fix.
  static Predictor load(const std::string& dir, const torch::Device& device);

  const RunConfig& config() const { return config_; }
  models::ClassifierImpl& model() const { return *model_; }
  const models::Classifier& model_ptr() const { return model_; }
  const torch::Device& device() const { return device_; }
  bool has_detector() const { return detector_ != nullptr; }
  const OodDetector* detector() const { return detector_.get(); }
  /// Decision threshold on the raw probability (overridable, e.g. by
  /// `--threshold`, which is on the calibrated probability).
  double threshold() const { return threshold_; }
  void set_threshold(double raw_threshold) { threshold_ = raw_threshold; }
  /// The calibrated probability that corresponds to a raw threshold.
  double calibrated_threshold() const;
  /// The raw threshold that gives this calibrated threshold.
  double raw_threshold_for(double calibrated) const;
  InputCheckOptions& input_checks() { return input_checks_; }
  /// Scores without the feature detector (input checks still apply): the
  /// OOD benchmark's baseline for the detector's cost.
  void disable_detector() { detector_.reset(); }
  int batch_size = 32;

  /// Scores preprocessed images (uint8 [N, 1, S, S] at the model's size):
  /// probabilities, decisions and the detector's flag (no input checks:
  /// these images were decoded and checked elsewhere).
  std::vector<Prediction> predict(const torch::Tensor& images,
                                  const PredictOptions& options = {}) const;
  /// Scores decoded full-resolution images: input checks, the same resize
  /// and 8-bit quantisation as training, then predict().
  std::vector<Prediction> predict(const std::vector<data::GrayImage>& images,
                                  const PredictOptions& options = {}) const;
  /// Reads and scores files. A file that cannot be read throws DataError,
  /// or with `skip_bad` gets Prediction::error and the rest go on.
  std::vector<Prediction> predict_files(
      const std::vector<std::string>& files,
      bool skip_bad,
      const PredictOptions& options = {}) const;

  /// The Grad-CAM layer `layer` names ("" = the model's default); throws
  /// ConfigError listing the valid names for an unknown one.
  std::string cam_layer(const std::string& layer) const;

  /// Preprocesses one decoded image as training does: [1, S, S] uint8.
  torch::Tensor preprocess(const data::GrayImage& image) const;

 private:
  RunConfig config_;
  models::Classifier model_;
  torch::Device device_ = torch::kCPU;
  std::shared_ptr<OodDetector> detector_;
  double threshold_ = 0.5;
  InputCheckOptions input_checks_;
};

}  // namespace cxr::infer
