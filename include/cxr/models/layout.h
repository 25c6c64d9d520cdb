#pragma once
/// Memory layout per device, weight snapshots and the eval-mode guard. On the
/// CPU, oneDNN runs convolutions fastest on channels-last (NHWC) tensors:
/// measured 1.5x for a training epoch of the study's baseline
/// (docs/performance.md). Results match the default layout up to float
/// rounding. CUDA keeps the default layout.
#include <torch/torch.h>

#include "cxr/models/classifier.h"

namespace cxr::models {

bool channels_last_on(const torch::Device& device);
/// Puts the model's 4-D weights in the layout `device` runs fastest.
void use_device_layout(ClassifierImpl& model, const torch::Device& device);
/// A 4-D batch in the layout `device` runs fastest (no copy if it is).
torch::Tensor device_layout(const torch::Tensor& x,
                            const torch::Device& device);

/// The model's parameters and buffers, detached copies (best weights, and
/// the randomisation checks of Grad-CAM).
std::vector<torch::Tensor> snapshot(ClassifierImpl& model);
/// Copies a snapshot back into the model (ModelError on a mismatch).
void restore(ClassifierImpl& model, const std::vector<torch::Tensor>& state);

/// Puts a module in eval mode and restores its previous mode on scope exit.
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& m)
      : m_(m), was_training_(m.is_training()) {
    m_.eval();
  }
  ~EvalModeGuard() { m_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  torch::nn::Module& m_;
  bool was_training_;
};

}  // namespace cxr::models
