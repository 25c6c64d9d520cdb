#include "cxr/models/transfer.h"

#include "cxr/common/error.h"
#include "cxr/models/mobilenet_v2.h"
#include "cxr/models/resnet50_v2.h"

namespace cxr::models {

namespace nn = torch::nn;

std::shared_ptr<KerasBackboneImpl> make_backbone(const std::string& arch,
                                                 bool include_top,
                                                 int64_t classes) {
  if (arch == "mobilenetv2") {
    return std::make_shared<MobileNetV2Impl>(include_top, classes);
  }
  if (arch == "resnet50v2") {
    return std::make_shared<ResNet50V2Impl>(include_top, classes);
  }
  throw ModelError("--model " + arch +
                   ": not a transfer backbone; use mobilenetv2 or resnet50v2");
}

TransferClassifierImpl::TransferClassifierImpl(ModelConfig config)
    : ClassifierImpl(std::move(config)) {
  const auto& c = config_;
  if (c.input_size < 32) {
    throw ConfigError("--size " + std::to_string(c.input_size) + ": " + c.arch +
                      " needs at least 32 pixels");
  }
  if (c.head_units < 1 || c.head_units > 65536) {
    throw ConfigError("--head-units " + std::to_string(c.head_units) +
                      ": use 1..65536");
  }
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) {
    throw ConfigError("--dropout must be in [0, 1)");
  }
  backbone_ = register_module("backbone", make_backbone(c.arch));
  head_dense_ = register_module(
      "head_dense", nn::Linear(backbone_->feature_channels(), c.head_units));
  dropout_ = register_module("dropout", nn::Dropout(c.dropout));
  head_logit_ = register_module("head_logit", nn::Linear(c.head_units, 1));
  // Keras Dense defaults, like the backbone: Glorot-uniform, zero bias.
  torch::NoGradGuard no_grad;
  for (nn::LinearImpl* fc : {head_dense_.get(), head_logit_.get()}) {
    nn::init::xavier_uniform_(fc->weight);
    fc->bias.zero_();
  }
  train(is_training());
}

torch::Tensor TransferClassifierImpl::forward_tapped(const torch::Tensor& x,
                                                     Tap* tap) {
  check_tap(tap);
  if (x.dim() != 4 || x.size(1) != 1) {
    throw ModelError(config_.arch +
                     ": expected grayscale input [N, 1, H, W], "
                     "got " +
                     std::to_string(x.dim()) + "-d tensor of shape " +
                     c10::str(x.sizes()));
  }
  // Keras preprocess_input ("tf" mode): x / 127.5 - 1 on [0, 255] pixels.
  torch::Tensor h = x.expand({-1, 3, -1, -1}) * 2.0 - 1.0;
  h = backbone_->forward_tapped(h, tap);
  h = h.mean({2, 3});
  h = torch::relu(head_dense_->forward(h));
  h = dropout_->forward(h);
  return head_logit_->forward(h).squeeze(1);
}

std::vector<std::string> TransferClassifierImpl::tap_names() const {
  return backbone_->layer_names();
}

std::string TransferClassifierImpl::default_tap() const {
  return backbone_->layer_names().back();
}

void TransferClassifierImpl::set_backbone_trainable(bool trainable) {
  backbone_->set_trainable(trainable);
}

void TransferClassifierImpl::set_trainable_from(const std::string& layer) {
  backbone_->set_trainable_from(layer);
}

void TransferClassifierImpl::train(bool on) {
  nn::Module::train(on);
  backbone_->train(on && config_.pretrained.empty());
}

void TransferClassifierImpl::load_backbone_weights(const std::string& h5_path) {
  backbone_->load_keras(h5_path);
  config_.pretrained = h5_path;
  train(is_training());
}

Classifier make_transfer_model(const ModelConfig& config) {
  return std::make_shared<TransferClassifierImpl>(config);
}

void load_keras_backbone(ClassifierImpl& model, const std::string& h5_path) {
  auto* transfer = dynamic_cast<TransferClassifierImpl*>(&model);
  if (!transfer) {
    throw ModelError("weights file '" + h5_path + "': the " +
                     model.config().arch +
                     " model has no Keras backbone to load it into; use "
                     "--model mobilenetv2 or resnet50v2");
  }
  transfer->load_backbone_weights(h5_path);
}

}  // namespace cxr::models
