#pragma once
/// The contract every cxr model satisfies: a binary classifier that takes
/// grayscale images in [0, 1], applies its own preprocessing (so a
/// checkpoint can never be used with the wrong normalisation) and returns one
/// logit per image. Intermediate activations can be "tapped" by layer name,
/// which is how Grad-CAM reads them without hooks.
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cxr::models {

/// Requests the activation of one named layer during a forward pass, and
/// optionally of further layers in the same pass (OOD features).
struct Tap {
  std::string layer;         ///< a name from tap_names() ("" = none)
  torch::Tensor activation;  ///< filled by forward_tapped: [N, C, h, w]
  /// Further layers to record in the same pass: names from tap_names()
  /// mapped to their activations (filled by forward_tapped).
  std::map<std::string, torch::Tensor> more;

  bool wants(const std::string& name) const {
    return name == layer || more.count(name) > 0;
  }
  void record(const std::string& name, const torch::Tensor& t) {
    if (name == layer) activation = t;
    auto it = more.find(name);
    if (it != more.end()) it->second = t;
  }
};

/// Architecture and preprocessing of a model; saved in every checkpoint.
struct ModelConfig {
  /// "baseline", "mobilenetv2" or "resnet50v2".
  std::string arch = "baseline";
  /// Input side length in pixels (square).
  int input_size = 128;
  /// Baseline: output channels of each conv block.
  std::vector<int> filters = {32, 64, 128, 128};
  /// Baseline: batch norm after each convolution.
  bool batch_norm = true;
  /// Dropout before the output layer, in [0, 1).
  double dropout = 0.3;
  /// Transfer: units of the Dense(relu) head layer.
  int head_units = 128;
  /// Normalisation for the baseline (train+val pixel mean and std of [0,1]
  /// images). Transfer models use Keras' x/127.5 - 1 instead.
  double mean = 0.5;
  double std = 0.25;
  /// Transfer: where the backbone weights came from ("" = random init).
  std::string pretrained;

  nlohmann::json to_json() const;
  /// Throws ModelError naming the bad field.
  static ModelConfig from_json(const nlohmann::json& j);
};

class ClassifierImpl : public torch::nn::Module {
 public:
  ~ClassifierImpl() override = default;

  /// x: [N, 1, H, W] float32 in [0, 1]. Returns [N] logits (positive class).
  torch::Tensor forward(const torch::Tensor& x) {
    return forward_tapped(x, nullptr);
  }
  /// As forward; when `tap` is set, stores that layer's activation in it.
  /// Throws ConfigError listing tap_names() for an unknown layer.
  virtual torch::Tensor forward_tapped(const torch::Tensor& x, Tap* tap) = 0;
  /// Names of layers whose activations can be tapped, input to output.
  virtual std::vector<std::string> tap_names() const = 0;
  /// The layer Grad-CAM uses by default (the last convolutional feature map).
  virtual std::string default_tap() const = 0;
  /// Transfer models: freeze or unfreeze the backbone. Frozen means no
  /// gradients; batch norm of the backbone is always in inference mode.
  virtual void set_backbone_trainable(bool trainable) { (void)trainable; }
  /// Transfer models: unfreeze only layers from `layer` on (Keras name).
  virtual void set_trainable_from(const std::string& layer) { (void)layer; }
  /// Parameters that currently require gradients.
  std::vector<torch::Tensor> trainable_parameters();

  const ModelConfig& config() const { return config_; }

 protected:
  explicit ClassifierImpl(ModelConfig config) : config_(std::move(config)) {}
  /// Helper for forward_tapped implementations.
  static void maybe_tap(Tap* tap, const char* name, const torch::Tensor& t);
  /// Throws if tap names a layer this model does not have.
  void check_tap(const Tap* tap) const;

  ModelConfig config_;
};

using Classifier = std::shared_ptr<ClassifierImpl>;

/// Builds a model from its config (random weights). Throws ModelError for an
/// unknown arch, ConfigError for bad options.
Classifier make_model(const ModelConfig& config);
/// True for an architecture with an ImageNet backbone (mobilenetv2,
/// resnet50v2): Keras weights, a frozen phase, then fine-tuning. The
/// baseline (and an unknown name) is not.
bool is_transfer(const std::string& arch);

/// Number of elements over all parameters.
int64_t count_parameters(torch::nn::Module& module);

/// The one wording of an unknown layer name, for every flag that takes one
/// (--layer, --unfreeze-from): "WHAT: no such layer in MODEL; valid layers
/// (input to output): a, b, c".
std::string unknown_layer_message(const std::string& what,
                                  const std::string& model,
                                  const std::vector<std::string>& valid);

}  // namespace cxr::models
