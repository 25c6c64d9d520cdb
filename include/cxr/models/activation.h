#pragma once
/// ReLU6 with a backward pass that runs in bfloat16 as fast as in float32.
///
/// LibTorch 1.13 has no bfloat16 CPU kernel for hardtanh's backward
/// (torch::relu6), so a bfloat16 autocast training step of MobileNetV2
/// failed there; the clamp-based replacements ran slower than float32
/// (docs/performance.md section 4). The backward here is one pass over the
/// saved output: the gradient where 0 < y < 6, else 0, which is exactly
/// hardtanh's rule for finite x (y = clamp(x, 0, 6), so 0 < y < 6 iff
/// 0 < x < 6).
#include <torch/torch.h>

namespace cxr::models {

/// min(max(x, 0), 6) (hardtanh, bit-identical to torch::relu6 in any
/// dtype); differentiable through relu6_backward.
torch::Tensor relu6(const torch::Tensor& x);

/// grad where 0 < y < 6, else 0 (y: relu6's output, same shape as grad). In
/// float32 equal to hardtanh_backward bit for bit; float32 and bfloat16
/// run a one-pass kernel, other dtypes fall back to tensor ops.
torch::Tensor relu6_backward(const torch::Tensor& grad, const torch::Tensor& y);

}  // namespace cxr::models
