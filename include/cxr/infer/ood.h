#pragma once
/// Out-of-distribution detector on the model's own features (Lee et al.
/// 2018): the per-channel spatial mean and standard deviation of several
/// layers, one class-conditional Gaussian per class with a shared, shrunk
/// covariance per layer, scored by the Mahalanobis distance to the nearest
/// class mean. Each layer's distance is standardised by its spread on the
/// training images, and the layers are averaged. The flag threshold is set
/// on held-out validation scores so that the 95 % upper confidence bound of
/// the share of in-distribution images flagged is at most false_flag_rate.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/models/classifier.h"

namespace cxr::infer {

/// Bumped when the detector's file format or scoring changes.
inline constexpr int kOodVersion = 1;

struct OodOptions {
  /// Fraction of in-distribution (validation) images allowed to be flagged.
  double false_flag_rate = 0.05;
  /// Layers used (spread from early to late over the model's tap names).
  int layers = 4;
  /// Covariance shrinkage towards its diagonal, in [0, 1].
  double shrinkage = 0.1;
  /// Also model the input image itself (kInputLayer: 8 x 8 grid of cell
  /// means and standard deviations) as one more "layer". Off: measured on
  /// the validation-derived OOD sets of a short baseline and MobileNetV2
  /// (cxr evaluate --ood-sets --split val), it raised the detector's catch
  /// of rotated/inverted films (which the input checks already flag) and
  /// lowered its AUROC on blurred ones (0.81 -> 0.75); no set's final flag
  /// rate improved.
  bool input_layer = false;
  /// How the layers' standardised distances combine: "mean" or "max".
  std::string combine = "mean";

  /// Throws ConfigError naming the flag (--ood-false-flag-rate,
  /// --ood-layers, --ood-combine) before any data is read.
  void validate() const;
};

struct LayerGaussian {
  std::string layer;
  torch::Tensor means;      ///< [classes, D] float64
  torch::Tensor precision;  ///< [D, D] float64, inverse shrunk covariance
  double score_mean = 0;    ///< of the distance on the training images
  double score_std = 1;
  /// Derived from `precision` by prepare() (fit and load call it), not
  /// saved: L with precision = L L^T, and the means times L, float32. The
  /// distance is then |x L - mean L|^2: one matrix product per image in
  /// float32 instead of one per class in float64 (4x less memory traffic;
  /// distances agree to ~1e-6 relative).
  torch::Tensor whiten, means_whitened;
  void prepare();
};

class OodDetector {
 public:
  std::vector<LayerGaussian> layers;
  /// Mean training image at 32 x 32 ([32, 32] float32 in [0, 1]), for the
  /// input checks (infer/input_check.h).
  torch::Tensor reference;
  double threshold = 0;
  std::string threshold_rule;
  double false_flag_rate = 0.05;
  /// Fraction of the images the threshold was set on that it flags.
  double fitted_flag_rate = 0;
  /// (1 - rate) quantile of the training images' scores: a refit on
  /// train+val shifts its threshold by its train-only run's
  /// threshold - train_quantile (held-out images score higher than
  /// training images; the shift is how much).
  double train_quantile = NAN;
  /// "mean" or "max" of the layers' standardised distances.
  std::string combine = "mean";

  /// Layers to tap, spread over the model's tap names (last included).
  static std::vector<std::string> choose_layers(
      const models::ClassifierImpl& model, int count);

  /// Fits the Gaussians on training features (one [N, D] tensor per layer,
  /// as forward_logits returns them) with labels [N] (0/1).
  static OodDetector fit(const std::vector<std::string>& layer_names,
                         const std::vector<torch::Tensor>& train_features,
                         const torch::Tensor& labels,
                         const OodOptions& options);

  std::vector<std::string> layer_names() const;
  /// Combined score [N] (float64; higher = further from training data).
  torch::Tensor score(const std::vector<torch::Tensor>& features) const;
  /// Sets the threshold on in-distribution `scores` so that the 95 % Wilson
  /// upper bound of the flagged share is at most `rate` (e.g. 400 images,
  /// rate 0.05: 11 flagged, 2.75 %).
  void set_threshold(const torch::Tensor& scores,
                     double rate,
                     const std::string& rule);

  /// Writes/reads the detector, atomically: a path ending in ".pt" in
  /// LibTorch's archive format (ood.pt of older run folders: trusted input,
  /// docs/reliability.md), any other (kOodFile) in the data-only safetensors
  /// layout read by cxr's checked reader (models/weights_file.h). Throws
  /// ModelError naming the file when it is corrupt or of another version.
  void save(const std::string& path) const;
  static OodDetector load(const std::string& path);
  /// Summary stored in config.json under "ood".
  nlohmann::json summary() const;
};

/// A run folder's detector file as this cxr writes it.
inline constexpr const char* kOodFile = "ood.safetensors";

/// DIR's detector file: DIR/ood.safetensors, or DIR/ood.pt in a run folder
/// of an older version that has only that.
std::string ood_file(const std::string& dir);

/// Quantile (linear interpolation) of a 1-D tensor.
double score_quantile(const torch::Tensor& values, double q);

}  // namespace cxr::infer
