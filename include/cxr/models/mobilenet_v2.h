#pragma once
/// MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
/// Bottlenecks", CVPR 2018), width multiplier 1.0, layer for layer as
/// `keras.applications.MobileNetV2`: the same layer names, ReLU6, batch norm
/// with epsilon 1e-3, TF-"same" padding for the stride-2 stem and Keras'
/// `correct_pad` zero padding + "valid" for the stride-2 depthwise
/// convolutions. 2,257,984 Keras weights without the top, 3,538,984 with it
/// (see count_keras_parameters).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/models/backbone.h"

namespace cxr::models {

class MobileNetV2Impl : public KerasBackboneImpl {
 public:
  /// include_top adds global average pooling and the Dense `predictions`
  /// (1280 -> classes); forward then returns [N, classes] logits. Throws
  /// ConfigError for classes < 1.
  explicit MobileNetV2Impl(bool include_top = false, int64_t classes = 1000);

  /// x: [N, 3, H, W] in [-1, 1]. Returns [N, 1280, ceil(H/32), ceil(W/32)]
  /// (`out_relu`), or [N, classes] logits with the top.
  torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) override;
  int64_t feature_channels() const override { return 1280; }
  /// {"global_average_pooling2d", "predictions", "Logits"} ("Logits" is the
  /// Dense's name in older keras-applications files).
  std::vector<std::string> top_layer_names() const override;
  std::string arch() const override { return "mobilenetv2"; }

 private:
  /// One inverted residual block (`block_<id>_*`, `expanded_conv_*` for 0).
  struct Block {
    std::string prefix;
    int64_t stride = 1;
    bool residual = false;
    torch::nn::Conv2d expand{nullptr};  // absent in block 0 (expansion 1)
    torch::nn::BatchNorm2d expand_bn{nullptr};
    torch::nn::Conv2d depthwise{nullptr};
    torch::nn::BatchNorm2d depthwise_bn{nullptr};
    torch::nn::Conv2d project{nullptr};
    torch::nn::BatchNorm2d project_bn{nullptr};
  };

  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn_conv1_{nullptr};
  std::vector<Block> blocks_;
  torch::nn::Conv2d conv_1_{nullptr};
  torch::nn::BatchNorm2d conv_1_bn_{nullptr};
  torch::nn::Linear predictions_{nullptr};
};
TORCH_MODULE(MobileNetV2);

}  // namespace cxr::models
