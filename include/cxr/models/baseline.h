#pragma once
/// The baseline CNN of the study (their Task 2), configurable: conv blocks
/// (3x3 conv [+BN] + ReLU, then 2x2 max-pool), global average pooling,
/// dropout and one output logit.
#include "cxr/models/classifier.h"

namespace cxr::models {

class BaselineCnnImpl : public ClassifierImpl {
 public:
  /// Uses config.filters (>= 1 block, each > 0), batch_norm, dropout, mean,
  /// std. Throws ConfigError for invalid values.
  explicit BaselineCnnImpl(ModelConfig config);
  torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) override;
  std::vector<std::string> tap_names() const override;
  std::string default_tap() const override;

 private:
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<torch::nn::BatchNorm2d> norms_;
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear fc_{nullptr};
  torch::Tensor mean_, std_;  // buffers: stored in the checkpoint
  std::vector<std::string> names_;
};
TORCH_MODULE(BaselineCnn);

}  // namespace cxr::models
