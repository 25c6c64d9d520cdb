#pragma once
/// ImageNet transfer classifiers (MobileNetV2, ResNet50V2): backbone with
/// Keras layer names -> global average pooling -> Dense(head_units, relu)
/// `head_dense` -> Dropout -> Dense(1) `head_logit`. Input grayscale in
/// [0,1] is repeated to 3 channels and scaled as Keras' preprocess_input for
/// both architectures does (x / 127.5 - 1 on [0, 255], i.e. x * 2 - 1).
#include <memory>
#include <string>
#include <vector>

#include "cxr/models/backbone.h"
#include "cxr/models/classifier.h"

namespace cxr::models {

class TransferClassifierImpl : public ClassifierImpl {
 public:
  /// Uses config.arch ("mobilenetv2" | "resnet50v2"), input_size (>= 32, the
  /// Keras minimum), head_units (>= 1) and dropout ([0, 1)); throws
  /// ConfigError naming the flag otherwise. Weights are random (Keras'
  /// Glorot-uniform); the backbone is trainable until
  /// set_backbone_trainable(false). config.pretrained is only a record: use
  /// load_keras_backbone to load weights.
  explicit TransferClassifierImpl(ModelConfig config);

  /// x: [N, 1, H, W] float32 in [0, 1]. Returns [N] logits. Throws
  /// ModelError for another shape.
  torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) override;
  /// The backbone's Keras layer names (KerasBackboneImpl::layer_names()).
  std::vector<std::string> tap_names() const override;
  /// "out_relu" (MobileNetV2) or "post_relu" (ResNet50V2).
  std::string default_tap() const override;
  void set_backbone_trainable(bool trainable) override;
  /// Throws ConfigError listing the valid Keras layer names.
  void set_trainable_from(const std::string& layer) override;
  /// Sets the mode of the head (dropout). The backbone's batch norm of a
  /// pretrained model (config().pretrained set, or weights loaded) stays in
  /// inference mode: with the small CXR batches its statistics would drift
  /// from the ImageNet ones the weights expect (the Keras fine-tuning guide
  /// calls the base model with training=False for this). A backbone from
  /// random initialisation has no such statistics, so its batch norm
  /// follows `on` and learns them, as when training from scratch.
  void train(bool on = true) override;

  /// Loads ImageNet weights from a Keras .h5 file (with or without the
  /// classification top; top weights are ignored) into the backbone and
  /// records `h5_path` in config().pretrained. Throws ModelError naming the
  /// file and layer; the model is unchanged on failure.
  void load_backbone_weights(const std::string& h5_path);

  KerasBackboneImpl& backbone() { return *backbone_; }

 private:
  std::shared_ptr<KerasBackboneImpl> backbone_;
  torch::nn::Linear head_dense_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear head_logit_{nullptr};
};
TORCH_MODULE(TransferClassifier);

/// A backbone by name: "mobilenetv2" or "resnet50v2" (ModelError otherwise).
std::shared_ptr<KerasBackboneImpl> make_backbone(const std::string& arch,
                                                 bool include_top = false,
                                                 int64_t classes = 1000);

/// Builds config.arch ("mobilenetv2" or "resnet50v2") with random weights.
Classifier make_transfer_model(const ModelConfig& config);

/// Loads Keras ImageNet weights into the backbone of `model` (see
/// TransferClassifierImpl::load_backbone_weights). Throws ModelError when
/// `model` is not a transfer model or the file does not fit.
void load_keras_backbone(ClassifierImpl& model, const std::string& h5_path);

}  // namespace cxr::models
