#include "cxr/models/backbone.h"

#include "cxr/common/error.h"

namespace cxr::models {

namespace nn = torch::nn;

nn::Conv2d KerasBackboneImpl::add_conv(const std::string& name,
                                       const KerasConvOptions& o) {
  auto conv = register_module(
      name, nn::Conv2d(nn::Conv2dOptions(o.in(), o.out(), o.kernel())
                           .stride(o.stride())
                           .padding(o.padding())
                           .groups(o.depthwise() ? o.in() : 1)
                           .bias(o.bias())));
  // Keras' glorot_uniform: limit sqrt(6 / (fan_in + fan_out)). torch's
  // fan computation differs from Keras' for depthwise kernels, but only
  // fan_in + fan_out enters the limit and that sum is the same.
  torch::NoGradGuard no_grad;
  nn::init::xavier_uniform_(conv->weight);
  if (o.bias()) conv->bias.zero_();
  add_name(name);
  refs_.push_back(
      {name, o.depthwise() ? KerasKind::kDepthwiseConv2D : KerasKind::kConv2D,
       conv});
  return nn::Conv2d(conv);
}

torch::Tensor KerasBackboneImpl::forward_top(torch::Tensor h,
                                             const char* pool_name,
                                             nn::Linear& predictions,
                                             Tap* tap) const {
  if (!include_top_) return h;
  h = h.mean({2, 3});
  tap_if(tap, pool_name, h);
  h = predictions->forward(h);
  tap_if(tap, "predictions", h);
  return h;
}

KerasBackboneImpl::KerasBackboneImpl(const std::string& name,
                                     bool include_top,
                                     int64_t classes,
                                     KerasBatchNorm bn)
    : include_top_(include_top), bn_(bn) {
  if (include_top && classes < 1) {
    throw ConfigError(name + ": classes must be >= 1, got " +
                      std::to_string(classes));
  }
}

nn::BatchNorm2d KerasBackboneImpl::add_bn(const std::string& name,
                                          int64_t channels) {
  auto bn = register_module(
      name,
      nn::BatchNorm2d(nn::BatchNormOptions(channels).eps(bn_.eps).momentum(
          1.0 - bn_.keras_momentum)));
  add_name(name);
  refs_.push_back({name, KerasKind::kBatchNorm, bn});
  return nn::BatchNorm2d(bn);
}

nn::Linear KerasBackboneImpl::add_dense(const std::string& name,
                                        int64_t in,
                                        int64_t out) {
  auto dense = register_module(name, nn::Linear(in, out));
  torch::NoGradGuard no_grad;
  nn::init::xavier_uniform_(dense->weight);
  dense->bias.zero_();
  add_name(name);
  refs_.push_back({name, KerasKind::kDense, dense});
  return nn::Linear(dense);
}

void KerasBackboneImpl::load_keras(const std::string& h5_path) {
  std::vector<std::string> ignored;
  if (!include_top_) ignored = top_layer_names();
  load_keras_h5(refs_, h5_path, ignored);
}

void KerasBackboneImpl::set_trainable(bool trainable) {
  for (auto& p : parameters()) p.set_requires_grad(trainable);
}

void KerasBackboneImpl::set_trainable_from(const std::string& layer) {
  auto it = std::find(layer_names_.begin(), layer_names_.end(), layer);
  if (it == layer_names_.end()) {
    throw ConfigError(unknown_layer_message("--unfreeze-from " + layer, arch(),
                                            layer_names_));
  }
  // Every weighted layer is also in layer_names_, so positions decide.
  const auto start = it - layer_names_.begin();
  for (const auto& ref : refs_) {
    const auto pos =
        std::find(layer_names_.begin(), layer_names_.end(), ref.name) -
        layer_names_.begin();
    for (auto& p : ref.module->parameters()) p.set_requires_grad(pos >= start);
  }
}

}  // namespace cxr::models
