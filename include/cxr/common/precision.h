#pragma once
/// Numeric precision of the forward passes (training, validation,
/// prediction): float32, or bfloat16 autocast on the CPU (oneDNN runs the
/// convolutions and matrix products in bfloat16 on CPUs with AVX-512 BF16 or
/// AMX; docs/performance.md section 4). Weights, optimizer state, the loss
/// and every score written to a file stay float32.
///
/// The precision is a process-wide runtime setting, like the thread count:
/// it changes how the arithmetic runs, not what a run is, and it must reach
/// every thread that runs a model (serve's worker, tune's trials). Autocast
/// itself is thread-local in LibTorch, so each forward pass opens its own
/// AutocastGuard, which reads the process-wide setting.
#include <torch/torch.h>

#include <string>

namespace cxr {

enum class Precision { kFloat32, kBFloat16 };

/// "fp32", "bf16", or "auto": bf16 where the device computes bfloat16
/// natively (see native_bf16), fp32 elsewhere. `device` is a --device name
/// (auto|cpu|cuda|cuda:N) and matters only for "auto". Anything else throws
/// ConfigError naming --precision.
Precision parse_precision(const std::string& name,
                          const std::string& device = "cpu");
std::string precision_name(Precision p);

/// Whether this CPU runs bfloat16 matrix products natively (the Linux CPU
/// flags avx512_bf16 or amx_bf16). Without them oneDNN emulates bfloat16
/// and it is slower than float32, so "auto" keeps float32. CUDA devices
/// are not probed: "auto" on CUDA is float32 (pass bf16 explicitly).
bool cpu_has_native_bf16();
/// The same test on the text of /proc/cpuinfo (exposed for tests).
bool cpuinfo_has_native_bf16(const std::string& cpuinfo);
std::string precision_name(Precision p);

/// The process-wide precision (default float32).
void set_precision(Precision p);
Precision precision();

/// Autocast to bfloat16 for the scope's forward pass when `p` is kBFloat16
/// and `device` is the CPU (or CUDA); no effect in float32. On exit the
/// previous autocast state is restored and, at the outermost guard, the
/// cache of cast weights is cleared: a cached bfloat16 copy must not outlive
/// an optimizer step that changes the float32 weight.
class AutocastGuard {
 public:
  explicit AutocastGuard(const torch::Device& device,
                         Precision p = precision());
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  /// Whether this guard turned autocast on.
  bool active() const { return active_; }

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace cxr
