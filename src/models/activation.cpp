#include "cxr/models/activation.h"

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>

namespace cxr::models {
namespace {

// 0 < y < 6 decided on the bit pattern: a positive float (sign bit clear)
// orders like its bits read as an unsigned integer; +0, every negative
// value (sign bit set: a large unsigned number) and NaN (above 6's bits)
// fall outside (0, bits(6)). Same answers as the float comparisons, and a
// loop the compiler vectorises for bfloat16, which has no fast scalar
// comparison in 1.13.
template <typename Bits>
void masked_copy(const Bits* __restrict y,
                 const Bits* __restrict g,
                 Bits* __restrict out,
                 int64_t n,
                 Bits six) {
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Bits b = y[i];
      out[i] = (b > 0 && b < six) ? g[i] : Bits(0);
    }
  });
}

torch::Tensor backward_kernel(const torch::Tensor& grad,
                              const torch::Tensor& y) {
  // The kernel walks memory in storage order, so grad is brought to y's
  // strides (channels-last stays channels-last; usually no copy).
  torch::Tensor g = grad;
  if (g.strides() != y.strides() || g.dtype() != y.dtype()) {
    g = torch::empty_like(y).copy_(grad);
  }
  torch::Tensor out = torch::empty_like(y);
  const int64_t n = y.numel();
  if (y.scalar_type() == torch::kFloat32) {
    uint32_t six = 0;
    const float six_f = 6.0f;
    std::memcpy(&six, &six_f, sizeof six);
    masked_copy(static_cast<const uint32_t*>(y.data_ptr()),
                static_cast<const uint32_t*>(g.data_ptr()),
                static_cast<uint32_t*>(out.data_ptr()), n, six);
  } else {
    // bfloat16 is the upper half of a float32: 6.0 is 0x40C0.
    masked_copy(static_cast<const uint16_t*>(y.data_ptr()),
                static_cast<const uint16_t*>(g.data_ptr()),
                static_cast<uint16_t*>(out.data_ptr()), n, uint16_t{0x40C0});
  }
  return out;
}

struct ReLU6Function : torch::autograd::Function<ReLU6Function> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const torch::Tensor& x) {
    torch::Tensor y = torch::hardtanh(x, 0.0, 6.0);
    ctx->save_for_backward({y});
    return y;
  }
  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grads) {
    const torch::Tensor y = ctx->get_saved_variables()[0];
    return {models::relu6_backward(grads[0], y)};
  }
};

}  // namespace

torch::Tensor relu6_backward(const torch::Tensor& grad,
                             const torch::Tensor& y) {
  const bool fast = y.device().is_cpu() && y.is_non_overlapping_and_dense() &&
                    grad.sizes() == y.sizes() &&
                    (y.scalar_type() == torch::kFloat32 ||
                     y.scalar_type() == torch::kBFloat16);
  if (fast) return backward_kernel(grad, y);
  // CUDA and other dtypes: the same rule as tensor ops.
  return grad * ((y > 0) & (y < 6)).to(grad.scalar_type());
}

torch::Tensor relu6(const torch::Tensor& x) {
  // Without a graph to record (inference, frozen layers) the plain op.
  if (!(torch::GradMode::is_enabled() && x.requires_grad())) {
    return torch::hardtanh(x, 0.0, 6.0);
  }
  return ReLU6Function::apply(x);
}

}  // namespace cxr::models
