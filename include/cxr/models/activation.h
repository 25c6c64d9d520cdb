#pragma once
/// ReLU6 with a backward pass that runs in bfloat16.
///
/// LibTorch 1.13 has no bfloat16 CPU kernel for hardtanh's backward
/// (torch::relu6), so a bfloat16 autocast training step of MobileNetV2
/// failed there; the clamp-based replacements ran slower than float32
/// (docs/performance.md section 4). The backward here works on the saved
/// output: the gradient where 0 < y < 6, else 0, which is exactly
/// hardtanh's rule for finite x (y = clamp(x, 0, 6), so 0 < y < 6 iff
/// 0 < x < 6). In float32 with a graph, relu6 is torch::relu6 itself (its
/// backward kernel is faster); the custom function serves bfloat16 only.
#include <torch/torch.h>

namespace cxr::models {

/// min(max(x, 0), 6) (hardtanh, bit-identical to torch::relu6 in any
/// dtype); differentiable through relu6_backward.
torch::Tensor relu6(const torch::Tensor& x);

/// grad where 0 < y < 6, else 0 (y: relu6's output, same shape as grad). In
/// float32 equal to hardtanh_backward bit for bit, in any dtype and layout
/// (LibTorch's threshold_backward, then a masked fill at y >= 6).
torch::Tensor relu6_backward(const torch::Tensor& grad, const torch::Tensor& y);

}  // namespace cxr::models
