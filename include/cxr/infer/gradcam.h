#pragma once
/// Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
/// Networks via Gradient-based Localization", ICCV 2017) for the
/// single-logit classifiers of cxr. Activations are read through the model's
/// tap contract (ClassifierImpl::forward_tapped), so no hooks are installed
/// and nothing outlives a call.
///
/// With one sigmoid output there is no separate score per class. As in the
/// reference study, the positive-class (COVID) map uses the logit and the
/// negative-class (Normal) map uses the negated logit, i.e. the evidence for
/// the other class. Both come from one forward pass and one gradient: the
/// gradient of -logit is the negated gradient of the logit.
///
/// It sits in `infer` because a Predictor returns the maps with its
/// predictions (PredictOptions::maps, for `serve` and `explain`); the trust
/// checks of the maps are in explain/trust.h.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/models/classifier.h"

namespace cxr::infer {

/// Grad-CAM of one batch. All tensors are detached, float32, on the CPU.
struct CamResult {
  torch::Tensor logits;         ///< [N] logit of the positive class
  torch::Tensor probabilities;  ///< [N] P(positive) = sigmoid(logit)
  torch::Tensor positive_maps;  ///< [N, H, W] in [0, 1]: evidence for positive
  torch::Tensor negative_maps;  ///< [N, H, W] in [0, 1]: evidence for negative
};

/// The Grad-CAM weighting rule (Selvaraju et al., eq. 1-2): channel weights
/// are the spatial mean of the score's gradient, the map is the ReLU of the
/// weighted sum of the activation's channels.
/// activation, gradient: [N, C, h, w] float. Returns [N, h, w] >= 0.
torch::Tensor gradcam_weighting(const torch::Tensor& activation,
                                const torch::Tensor& gradient);

/// Upsamples raw maps [N, h, w] bilinearly (align_corners = false) to
/// [N, height, width] and min-max normalises each one to [0, 1] as
/// (m - min) / (max - min). A map whose range is at most 1e-7 of its largest
/// magnitude counts as constant (no evidence at all) and becomes all zeros;
/// the tolerance is relative because raw maps scale with the gradient.
torch::Tensor normalize_and_upsample(const torch::Tensor& maps,
                                     int64_t height,
                                     int64_t width);

/// Grad-CAM on one tapped layer of a classifier, usable on any number of
/// images (batched internally, the model is loaded once by the caller).
///
///   GradCam cam(model, "block4_relu");
///   CamResult r = cam.compute(images);  // [N, 1, H, W] float in [0, 1]
class GradCam {
 public:
  /// `layer` is one of model->tap_names(); "" picks model->default_tap() (the
  /// last convolutional feature map). Throws ConfigError listing the valid
  /// names for an unknown layer. `batch_size` (>= 1) images go through the
  /// model at once.
  GradCam(models::Classifier model, std::string layer = "", int batch_size = 8);

  /// images: [N, 1, H, W] float32 in [0, 1], or uint8 in [0, 255] (divided by
  /// 255), on any device (moved to the model's). Runs the model in eval mode
  /// (its previous mode is restored) with gradients enabled even under a
  /// NoGradGuard. Gradients are taken with torch::autograd::grad with respect
  /// to the tapped activation only, so parameters' .grad stay untouched and
  /// the graph is freed before returning. Throws ConfigError for a bad shape.
  CamResult compute(const torch::Tensor& images);

  const std::string& layer() const { return layer_; }
  const models::Classifier& model() const { return model_; }

 private:
  CamResult compute_batch(const torch::Tensor& images);

  models::Classifier model_;
  std::string layer_;
  int batch_size_;
};

/// [N, 1, H, W] uint8 (divided by 255) or float images as float32 in [0, 1];
/// ConfigError naming `what` for another shape.
torch::Tensor as_unit_float(const torch::Tensor& images, const char* what);

/// The device of the model's first parameter or buffer (CPU if it has none).
torch::Device model_device(const models::ClassifierImpl& model);

}  // namespace cxr::infer
