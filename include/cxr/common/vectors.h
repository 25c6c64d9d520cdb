#pragma once
/// Tensor <-> std::vector for the metric functions (which take plain
/// vectors): one copy, on the CPU. And a tensor's shape for error messages.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace cxr {

/// Every element as a double (any dtype, any device, flattened).
inline std::vector<double> to_doubles(const torch::Tensor& x) {
  auto t = x.to(torch::kCPU).to(torch::kFloat64).contiguous();
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

/// Every element as an int (labels 0/1), flattened.
inline std::vector<int> to_ints(const torch::Tensor& x) {
  auto t = x.to(torch::kCPU).to(torch::kInt32).contiguous();
  return {t.data_ptr<int>(), t.data_ptr<int>() + t.numel()};
}

/// "[2, 1, 64, 64]", or "undefined": for error messages.
inline std::string shape_of(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    s += (i ? ", " : "") + std::to_string(t.size(i));
  }
  return s + "]";
}

}  // namespace cxr
