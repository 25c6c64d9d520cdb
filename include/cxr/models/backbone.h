#pragma once
/// The common interface of the Keras-compatible ImageNet backbones
/// (MobileNetV2, ResNet50V2): Keras layer names for taps, fine-tuning and
/// weight import.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/models/classifier.h"
#include "cxr/models/keras_h5.h"

namespace cxr::models {

/// A Keras Conv2D (groups = 1) or DepthwiseConv2D (groups = in = out), named
/// as torch's options are: KerasConvOptions(in, out, 3).stride(2).bias(true).
struct KerasConvOptions {
  KerasConvOptions(int64_t in, int64_t out, int64_t kernel)
      : in_(in), out_(out), kernel_(kernel) {}
  TORCH_ARG(int64_t, in);
  TORCH_ARG(int64_t, out);
  TORCH_ARG(int64_t, kernel);
  TORCH_ARG(int64_t, stride) = 1;
  /// Symmetric zero padding; asymmetric Keras padding is applied explicitly
  /// in forward.
  TORCH_ARG(int64_t, padding) = 0;
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(bool, depthwise) = false;
};

/// The BatchNormalization settings of a Keras application: every BN layer of
/// one backbone uses the same.
struct KerasBatchNorm {
  double eps;
  double keras_momentum;  ///< torch's momentum is 1 - this
};

class KerasBackboneImpl : public torch::nn::Module {
 public:
  ~KerasBackboneImpl() override = default;

  /// x: [N, 3, H, W] float32, already scaled as Keras' preprocess_input
  /// (x / 127.5 - 1, i.e. [-1, 1]). Returns the last feature map
  /// [N, feature_channels(), h, w], or [N, classes] logits (before softmax)
  /// when built with the classification top. When `tap` names one of
  /// layer_names(), its output is stored in it; an unknown name is ignored
  /// here (the classifier validates it).
  virtual torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) = 0;
  torch::Tensor forward(const torch::Tensor& x) {
    return forward_tapped(x, nullptr);
  }

  /// Every Keras layer after the input, weightless ones included, in Keras'
  /// `model.layers` order (the `layer_names` of a saved file minus the
  /// input). Auto-named layers (ResNet50V2's `max_pooling2d*`) are left out.
  const std::vector<std::string>& layer_names() const { return layer_names_; }
  /// The layers that hold weights, in the same order.
  const std::vector<KerasLayerRef>& keras_layers() const { return refs_; }
  /// Channels of the last feature map (1280 / 2048).
  virtual int64_t feature_channels() const = 0;
  /// Keras names of the classification top ("predictions", ...): present in
  /// `layer_names()` only when built with the top; always ignored when a file
  /// with a top is loaded into a backbone without one.
  virtual std::vector<std::string> top_layer_names() const = 0;
  /// "mobilenetv2" / "resnet50v2".
  virtual std::string arch() const = 0;
  bool include_top() const { return include_top_; }

  /// Loads a Keras HDF5 weight file (see keras_h5.h). A file with the top
  /// can be loaded into a model without it. Throws ModelError.
  void load_keras(const std::string& h5_path);
  /// requires_grad of every parameter.
  void set_trainable(bool trainable);
  /// Keras fine-tuning (`for l in base.layers[:i]: l.trainable = False`):
  /// only the weights of `layer` and the layers after it get gradients.
  /// Throws ConfigError listing the valid names for an unknown layer.
  void set_trainable_from(const std::string& layer);

 protected:
  /// Throws ConfigError naming `name` ("MobileNetV2") for a top with
  /// `classes` < 1.
  KerasBackboneImpl(const std::string& name,
                    bool include_top,
                    int64_t classes,
                    KerasBatchNorm bn);

  /// Registers a Keras convolution as a torch Conv2d. Weights are
  /// Glorot-uniform and biases zero, as Keras initialises them.
  torch::nn::Conv2d add_conv(const std::string& name,
                             const KerasConvOptions& options);
  /// Registers a Keras BatchNormalization with the backbone's settings.
  torch::nn::BatchNorm2d add_bn(const std::string& name, int64_t channels);
  torch::nn::Linear add_dense(const std::string& name, int64_t in, int64_t out);
  /// Appends a weightless layer name to layer_names().
  void add_name(const std::string& name) { layer_names_.push_back(name); }

  /// The classification top both backbones share: global average pooling
  /// (tapped as `pool_name`) and the dense `predictions`; `h` unchanged
  /// without the top.
  torch::Tensor forward_top(torch::Tensor h,
                            const char* pool_name,
                            torch::nn::Linear& predictions,
                            Tap* tap) const;

  static void tap_if(Tap* tap,
                     const std::string& name,
                     const torch::Tensor& t) {
    if (tap) tap->record(name, t);
  }

 private:
  bool include_top_;
  KerasBatchNorm bn_;
  std::vector<std::string> layer_names_;
  std::vector<KerasLayerRef> refs_;
};

}  // namespace cxr::models
