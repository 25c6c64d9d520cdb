#include "cxr/models/layout.h"

#include "cxr/common/error.h"

namespace cxr::models {

bool channels_last_on(const torch::Device& device) {
  return device.is_cpu();
}

void use_device_layout(ClassifierImpl& model, const torch::Device& device) {
  if (!channels_last_on(device)) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    // A copy into channels-last strides: contiguous() would keep the
    // ambiguous strides of a 1-input-channel kernel, and oneDNN would then
    // run the first (largest) convolution in NCHW. Weights already in those
    // strides (every call after the first) are left alone.
    if (p.dim() == 4 &&
        p.strides().vec() != c10::get_channels_last_strides_2d(p.sizes())) {
      p.set_data(p.to(p.options(), /*non_blocking=*/false, /*copy=*/true,
                      torch::MemoryFormat::ChannelsLast));
    }
  }
}

torch::Tensor device_layout(const torch::Tensor& x,
                            const torch::Device& device) {
  return channels_last_on(device) && x.dim() == 4
             ? x.contiguous(torch::MemoryFormat::ChannelsLast)
             : x;
}

std::vector<torch::Tensor> snapshot(ClassifierImpl& model) {
  std::vector<torch::Tensor> out;
  for (auto& p : model.parameters()) out.push_back(p.detach().clone());
  for (auto& b : model.buffers()) out.push_back(b.detach().clone());
  return out;
}

void restore(ClassifierImpl& model, const std::vector<torch::Tensor>& state) {
  torch::NoGradGuard no_grad;
  size_t i = 0;
  auto params = model.parameters();
  auto buffers = model.buffers();
  if (state.size() != params.size() + buffers.size()) {
    throw ModelError("saved weights do not match the model (" +
                     std::to_string(state.size()) + " tensors, model has " +
                     std::to_string(params.size() + buffers.size()) + ")");
  }
  for (auto& p : params) p.copy_(state[i++]);
  for (auto& b : buffers) b.copy_(state[i++]);
}

}  // namespace cxr::models
