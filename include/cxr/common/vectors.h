#pragma once
/// Tensor <-> std::vector for the metric functions (which take plain
/// vectors): one copy, on the CPU.
#include <torch/torch.h>

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

}  // namespace cxr
