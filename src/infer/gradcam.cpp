// Grad-CAM: the weighting rule, normalisation and the batched GradCam.
// The trust checks of its maps live in explain/trust.cpp.
#include "cxr/infer/gradcam.h"

#include <algorithm>
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/common/vectors.h"
#include "cxr/models/layout.h"

namespace cxr::infer {

torch::Tensor as_unit_float(const torch::Tensor& images, const char* what) {
  if (!images.defined() || images.dim() != 4 || images.size(1) != 1) {
    throw ConfigError(std::string(what) +
                      ": images must be [N, 1, H, W] grayscale, got " +
                      shape_of(images));
  }
  if (images.scalar_type() == torch::kUInt8) {
    return images.to(torch::kFloat32).div_(255.0f);
  }
  return images.to(torch::kFloat32);
}

torch::Device model_device(const models::ClassifierImpl& model) {
  for (const auto& p : model.parameters()) return p.device();
  for (const auto& b : model.buffers()) return b.device();
  return torch::Device(torch::kCPU);
}

torch::Tensor gradcam_weighting(const torch::Tensor& activation,
                                const torch::Tensor& gradient) {
  if (activation.dim() != 4 || !gradient.defined() ||
      gradient.sizes() != activation.sizes()) {
    throw ConfigError(
        "Grad-CAM needs a feature map [N, C, h, w] and a "
        "gradient of the same shape, got " +
        shape_of(activation) + " and " + shape_of(gradient));
  }
  auto weights = gradient.mean({2, 3}, /*keepdim=*/true);
  return torch::relu((weights * activation).sum(1));
}

torch::Tensor normalize_and_upsample(const torch::Tensor& maps,
                                     int64_t height,
                                     int64_t width) {
  namespace F = torch::nn::functional;
  if (maps.dim() != 3) {
    throw ConfigError("Grad-CAM maps must be [N, h, w], got " + shape_of(maps));
  }
  const int64_t n = maps.size(0);
  auto up = F::interpolate(maps.unsqueeze(1).to(torch::kFloat32),
                           F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false))
                .reshape({n, height * width});
  auto lo = std::get<0>(up.min(1, /*keepdim=*/true));
  auto hi = std::get<0>(up.max(1, /*keepdim=*/true));
  auto range = hi - lo;
  // Relative, not absolute (pytorch-grad-cam adds 1e-7 to the range): raw
  // maps scale with the gradient, often ~1e-3 here, and an absolute epsilon
  // would keep their maximum visibly below 1.
  auto has_spread = range > 1e-7 * torch::max(hi.abs(), lo.abs());
  auto scaled = (up - lo) / range.clamp_min(1e-30);
  return torch::where(has_spread, scaled, torch::zeros_like(up))
      .reshape({n, height, width});
}

GradCam::GradCam(models::Classifier model, std::string layer, int batch_size)
    : model_(std::move(model)),
      layer_(std::move(layer)),
      batch_size_(batch_size) {
  if (!model_) throw ConfigError("Grad-CAM: no model given");
  if (batch_size_ < 1) {
    throw ConfigError("--batch-size " + std::to_string(batch_size_) +
                      ": use at least 1 image per batch");
  }
  const auto names = model_->tap_names();
  if (layer_.empty()) layer_ = model_->default_tap();
  if (std::find(names.begin(), names.end(), layer_) == names.end()) {
    throw ConfigError(models::unknown_layer_message(
                          "--layer " + layer_,
                          "this " + model_->config().arch + " model", names) +
                      " (see --list-layers)");
  }
}

CamResult GradCam::compute(const torch::Tensor& images) {
  auto x = as_unit_float(images, "Grad-CAM");
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (n == 0) {
    return {torch::empty({0}), torch::empty({0}), torch::empty({0, h, w}),
            torch::empty({0, h, w})};
  }
  std::vector<torch::Tensor> logits, pos, neg;
  for (int64_t s = 0; s < n; s += batch_size_) {
    auto r = compute_batch(x.slice(0, s, std::min(n, s + batch_size_)));
    logits.push_back(r.logits);
    pos.push_back(r.positive_maps);
    neg.push_back(r.negative_maps);
  }
  CamResult out;
  out.logits = torch::cat(logits);
  out.probabilities = torch::sigmoid(out.logits);
  out.positive_maps = torch::cat(pos);
  out.negative_maps = torch::cat(neg);
  return out;
}

CamResult GradCam::compute_batch(const torch::Tensor& images) {
  auto& model = *model_;
  models::EvalModeGuard mode(model);
  // Grad-CAM needs a graph even when the caller disabled autograd.
  torch::AutoGradMode enable_grad(true);
  // The input requires grad so the tapped activation is in the graph even
  // when the layers before it are frozen; the detach keeps the caller's
  // tensor untouched.
  auto x = images.to(model_device(model)).detach().requires_grad_(true);
  models::Tap tap;
  tap.layer = layer_;
  torch::Tensor logits = model.forward_tapped(x, &tap);
  if (!tap.activation.defined() || tap.activation.dim() != 4) {
    throw ConfigError("--layer " + layer_ + ": gives " +
                      shape_of(tap.activation) +
                      ", not a feature map [N, C, h, w]; choose a "
                      "convolutional layer (see --list-layers)");
  }
  // Images are independent in eval mode, so the gradient of the summed
  // logits holds every image's own gradient. autograd::grad (not backward)
  // leaves parameters' .grad alone; retain_graph = false frees the graph.
  auto grads = torch::autograd::grad({logits.sum()}, {tap.activation},
                                     /*grad_outputs=*/{},
                                     /*retain_graph=*/false,
                                     /*create_graph=*/false,
                                     /*allow_unused=*/true);
  auto activation = tap.activation.detach();
  auto grad =
      grads[0].defined() ? grads[0].detach() : torch::zeros_like(activation);
  const int64_t h = images.size(2), w = images.size(3);
  CamResult r;
  r.logits = logits.detach().to(torch::kFloat32).cpu();
  // The negated logit's gradient is -grad: the Normal map at no extra cost.
  r.positive_maps =
      normalize_and_upsample(gradcam_weighting(activation, grad), h, w).cpu();
  r.negative_maps =
      normalize_and_upsample(gradcam_weighting(activation, -grad), h, w).cpu();
  return r;
}

}  // namespace cxr::infer
