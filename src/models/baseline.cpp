#include "cxr/models/baseline.h"

#include "cxr/common/error.h"

namespace cxr::models {

namespace nn = torch::nn;

BaselineCnnImpl::BaselineCnnImpl(ModelConfig config)
    : ClassifierImpl(std::move(config)) {
  const auto& c = config_;
  if (c.filters.empty()) {
    throw ConfigError(
        "--filters: give at least one conv block, e.g. 32,64,128");
  }
  for (int f : c.filters) {
    if (f <= 0 || f > 4096) {
      throw ConfigError("--filters: " + std::to_string(f) +
                        " is not a valid channel count (1..4096)");
    }
  }
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) {
    throw ConfigError("--dropout must be in [0, 1)");
  }
  if (!(c.std > 0.0)) throw ConfigError("normalisation std must be > 0");
  // Each block halves the side. Shifting an int by its width or more is
  // undefined (x86 shifts by the count mod 32, so 40 blocks passed as 8), so
  // more blocks than bits is refused before the shift.
  if (c.filters.size() >= 31 || c.input_size >> c.filters.size() < 1) {
    throw ConfigError("--size " + std::to_string(c.input_size) +
                      " is too small for " + std::to_string(c.filters.size()) +
                      " pooling blocks");
  }
  int in = 1;
  for (size_t i = 0; i < c.filters.size(); ++i) {
    const std::string n = "block" + std::to_string(i + 1);
    convs_.push_back(register_module(
        n + "_conv", nn::Conv2d(nn::Conv2dOptions(in, c.filters[i], 3)
                                    .padding(1)
                                    .bias(!c.batch_norm))));
    if (c.batch_norm) {
      norms_.push_back(
          register_module(n + "_bn", nn::BatchNorm2d(c.filters[i])));
    }
    names_.push_back(n + "_conv");
    names_.push_back(n + "_relu");
    in = c.filters[i];
  }
  dropout_ = register_module("dropout", nn::Dropout(c.dropout));
  fc_ = register_module("fc", nn::Linear(in, 1));
  mean_ = register_buffer("norm_mean", torch::full({1}, c.mean));
  std_ = register_buffer("norm_std", torch::full({1}, c.std));
}

torch::Tensor BaselineCnnImpl::forward_tapped(const torch::Tensor& x,
                                              Tap* tap) {
  check_tap(tap);
  torch::Tensor h = (x - mean_) / std_;
  for (size_t i = 0; i < convs_.size(); ++i) {
    h = convs_[i]->forward(h);
    maybe_tap(tap, names_[2 * i].c_str(), h);
    if (!norms_.empty()) h = norms_[i]->forward(h);
    h = torch::relu(h);
    maybe_tap(tap, names_[2 * i + 1].c_str(), h);
    h = torch::max_pool2d(h, 2);
  }
  h = h.mean({2, 3});
  h = dropout_->forward(h);
  return fc_->forward(h).squeeze(1);
}

std::vector<std::string> BaselineCnnImpl::tap_names() const {
  return names_;
}

std::string BaselineCnnImpl::default_tap() const {
  return names_.back();
}

}  // namespace cxr::models
