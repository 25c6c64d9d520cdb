// The mapping of Keras layers onto torch modules: weight names, the layout
// of kernels (Keras [kh,kw,in,out] vs torch [out,in,kh,kw]) and the checks
// that a file's layers fit a model. The HDF5 file itself is keras_h5.cpp.
#include "cxr/models/keras_h5.h"

#include <map>
#include <set>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/models/classifier.h"

namespace cxr::models {

namespace {

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// The last path component without Keras' ":0" suffix: "kernel" for
// "block_1_expand/kernel:0".
std::string base_name(const std::string& weight_name) {
  std::string s = weight_name.substr(weight_name.rfind('/') + 1);
  return s.substr(0, s.rfind(':'));
}

std::vector<std::string> expected_names(KerasKind kind, bool bias) {
  switch (kind) {
    case KerasKind::kConv2D:
    case KerasKind::kDense:
      return bias ? std::vector<std::string>{"kernel", "bias"}
                  : std::vector<std::string>{"kernel"};
    case KerasKind::kDepthwiseConv2D:
      return bias ? std::vector<std::string>{"depthwise_kernel", "bias"}
                  : std::vector<std::string>{"depthwise_kernel"};
    case KerasKind::kBatchNorm:
      return {"gamma", "beta", "moving_mean", "moving_variance"};
  }
  return {};
}

// The torch tensors of a module in Keras weight order.
std::vector<torch::Tensor> torch_tensors(const KerasLayerRef& ref) {
  auto* m = ref.module.get();
  if (ref.kind == KerasKind::kBatchNorm) {
    auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m);
    TORCH_CHECK(bn, "Keras layer ", ref.name, " is not a BatchNorm2d");
    return {bn->weight, bn->bias, bn->running_mean, bn->running_var};
  }
  torch::Tensor w, b;
  if (ref.kind == KerasKind::kDense) {
    auto* fc = dynamic_cast<torch::nn::LinearImpl*>(m);
    TORCH_CHECK(fc, "Keras layer ", ref.name, " is not a Linear");
    w = fc->weight;
    b = fc->bias;
  } else {
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(m);
    TORCH_CHECK(conv, "Keras layer ", ref.name, " is not a Conv2d");
    w = conv->weight;
    b = conv->bias;
  }
  if (b.defined()) return {w, b};
  return {w};
}

// Keras layout <-> torch layout of the first (kernel) tensor.
torch::Tensor kernel_to_keras(KerasKind kind, const torch::Tensor& w) {
  switch (kind) {
    case KerasKind::kConv2D:  // [out,in,kh,kw] -> [kh,kw,in,out]
      return w.permute({2, 3, 1, 0});
    case KerasKind::kDepthwiseConv2D:  // [C,1,kh,kw] -> [kh,kw,C,1]
      return w.permute({2, 3, 0, 1});
    case KerasKind::kDense:  // [out,in] -> [in,out]
      return w.t();
    case KerasKind::kBatchNorm:
      return w;
  }
  return w;
}

torch::Tensor kernel_from_keras(KerasKind kind, const torch::Tensor& k) {
  switch (kind) {
    case KerasKind::kConv2D:
      return k.permute({3, 2, 0, 1});
    case KerasKind::kDepthwiseConv2D:
      return k.permute({2, 3, 0, 1});
    case KerasKind::kDense:
      return k.t();
    case KerasKind::kBatchNorm:
      return k;
  }
  return k;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

std::vector<KerasLayerWeights> to_keras_weights(
    const std::vector<KerasLayerRef>& refs) {
  std::vector<KerasLayerWeights> out;
  for (const auto& ref : refs) {
    auto tensors = torch_tensors(ref);
    auto names = expected_names(ref.kind, tensors.size() == 2);
    KerasLayerWeights lw{ref.name, {}};
    for (size_t i = 0; i < tensors.size(); ++i) {
      torch::Tensor v = tensors[i].detach();
      if (i == 0) v = kernel_to_keras(ref.kind, v);
      lw.weights.push_back({ref.name + "/" + names[i] + ":0",
                            v.to(torch::kCPU, torch::kFloat32).contiguous()});
    }
    out.push_back(std::move(lw));
  }
  return out;
}

void assign_keras_weights(const std::vector<KerasLayerRef>& refs,
                          const std::vector<KerasLayerWeights>& file_layers,
                          const std::string& file,
                          const std::vector<std::string>& ignored) {
  const std::string where = "weights file '" + file + "'";
  std::map<std::string, const KerasLayerWeights*> by_name;
  for (const auto& l : file_layers) {
    if (!by_name.emplace(l.layer, &l).second) {
      throw ModelError(where + ": layer '" + l.layer + "' appears twice");
    }
  }
  std::set<std::string> wanted;
  for (const auto& r : refs) wanted.insert(r.name);
  const std::set<std::string> skip(ignored.begin(), ignored.end());

  size_t overlap = 0;
  for (const auto& l : file_layers) overlap += wanted.count(l.layer);
  if (overlap == 0 && !refs.empty()) {
    throw ModelError(where + ": none of its " +
                     std::to_string(file_layers.size()) + " weighted layers" +
                     (file_layers.empty()
                          ? ""
                          : " (first: '" + file_layers[0].layer + "')") +
                     " is a layer of this model (first: '" + refs[0].name +
                     "'); it holds weights for a different architecture");
  }
  for (const auto& l : file_layers) {
    if (!wanted.count(l.layer) && !skip.count(l.layer)) {
      throw ModelError(where + ": layer '" + l.layer +
                       "' has no counterpart in the model (weights for a "
                       "different architecture or variant?)");
    }
  }

  // Validate everything before copying anything.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& ref : refs) {
    auto it = by_name.find(ref.name);
    if (it == by_name.end()) {
      throw ModelError(where + ": layer '" + ref.name +
                       "' is missing (the file has " +
                       std::to_string(file_layers.size()) +
                       " weighted layers, the model needs " +
                       std::to_string(refs.size()) + ")");
    }
    const KerasLayerWeights& lw = *it->second;
    auto tensors = torch_tensors(ref);
    auto names = expected_names(ref.kind, tensors.size() == 2);
    std::vector<std::string> got;
    for (const auto& w : lw.weights) got.push_back(base_name(w.name));
    if (got != names) {
      throw ModelError(where + ": layer '" + ref.name + "' has weights [" +
                       join(got) + "] but the model expects [" + join(names) +
                       "]");
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const torch::Tensor& value = lw.weights[i].value;
      const torch::Tensor keras_shape =
          i == 0 ? kernel_to_keras(ref.kind, tensors[i]) : tensors[i];
      if (value.sizes() != keras_shape.sizes()) {
        throw ModelError(where + ": layer '" + ref.name + "' weight '" +
                         lw.weights[i].name + "' has shape " +
                         shape_str(value.sizes()) + " but the model needs " +
                         shape_str(keras_shape.sizes()) + " (Keras layout)");
      }
      copies.emplace_back(tensors[i],
                          i == 0 ? kernel_from_keras(ref.kind, value) : value);
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src);
}

void load_keras_h5(const std::vector<KerasLayerRef>& refs,
                   const std::string& path,
                   const std::vector<std::string>& ignored) {
  assign_keras_weights(refs, read_keras_h5(path), path, ignored);
}

int64_t count_keras_parameters(torch::nn::Module& module) {
  int64_t n = count_parameters(module);
  for (const auto& b : module.named_buffers()) {
    const std::string& key = b.key();
    auto ends_with = [&](const std::string& s) {
      return key.size() >= s.size() &&
             key.compare(key.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with("running_mean") || ends_with("running_var")) {
      n += b.value().numel();
    }
  }
  return n;
}

}  // namespace cxr::models
