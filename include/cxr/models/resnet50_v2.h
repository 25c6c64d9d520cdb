#pragma once
/// ResNet50V2 (He et al., "Identity Mappings in Deep Residual Networks",
/// ECCV 2016: pre-activation bottleneck blocks), layer for layer as
/// `keras.applications.ResNet50V2`: stacks of 3/4/6/3 blocks where, unlike
/// the paper and torchvision, the stride sits in the LAST block of stacks
/// conv2..conv4 (a 1x1 stride-2 max-pool shortcut), batch norm epsilon
/// 1.001e-5, biased convolutions except the bottleneck's first two, and
/// zero (not -inf) padding before the stem max-pool. 23,564,800 Keras
/// weights without the top, 25,613,800 with it.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/models/backbone.h"

namespace cxr::models {

class ResNet50V2Impl : public KerasBackboneImpl {
 public:
  /// include_top adds global average pooling `avg_pool` and the Dense
  /// `predictions` (2048 -> classes); forward then returns [N, classes]
  /// logits. Throws ConfigError for classes < 1.
  explicit ResNet50V2Impl(bool include_top = false, int64_t classes = 1000);

  /// x: [N, 3, H, W] in [-1, 1]. Returns [N, 2048, h, w] (`post_relu`;
  /// h = ceil(H/32) for the sizes used here), or [N, classes] logits.
  torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) override;
  int64_t feature_channels() const override { return 2048; }
  /// {"avg_pool", "predictions", "probs"} ("probs" in keras-applications
  /// before TF 2).
  std::vector<std::string> top_layer_names() const override;
  std::string arch() const override { return "resnet50v2"; }

 private:
  /// One pre-activation bottleneck block (`conv<s>_block<b>_*`).
  struct Block {
    std::string prefix;
    int64_t stride = 1;
    torch::nn::BatchNorm2d preact_bn{nullptr};
    torch::nn::Conv2d conv0{nullptr};  // projection shortcut (first block)
    torch::nn::Conv2d conv1{nullptr};
    torch::nn::BatchNorm2d bn1{nullptr};
    torch::nn::Conv2d conv2{nullptr};
    torch::nn::BatchNorm2d bn2{nullptr};
    torch::nn::Conv2d conv3{nullptr};
  };

  torch::nn::Conv2d conv1_conv_{nullptr};
  std::vector<Block> blocks_;
  torch::nn::BatchNorm2d post_bn_{nullptr};
  torch::nn::Linear predictions_{nullptr};
};
TORCH_MODULE(ResNet50V2);

}  // namespace cxr::models
