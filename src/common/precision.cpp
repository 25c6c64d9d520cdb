#include "cxr/common/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/runtime.h"

// LibTorch 2.4 replaced the per-device autocast functions
// (set_cpu_enabled, set_autocast_cpu_dtype, ...) with ones that take the
// device type; both are wrapped here so the code builds with 1.13 and 2.x.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define CXR_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define CXR_AUTOCAST_BY_DEVICE_TYPE 0
#endif

namespace cxr {
namespace {

std::atomic<Precision> g_precision{Precision::kFloat32};

bool autocast_enabled(bool cuda) {
#if CXR_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType autocast_dtype(bool cuda) {
#if CXR_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::get_autocast_gpu_dtype()
              : at::autocast::get_autocast_cpu_dtype();
#endif
}

void set_autocast(bool cuda, bool enabled, at::ScalarType dtype) {
#if CXR_AUTOCAST_BY_DEVICE_TYPE
  const auto type = cuda ? at::kCUDA : at::kCPU;
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

}  // namespace

Precision parse_precision(const std::string& name, const std::string& device) {
  if (name == "fp32") return Precision::kFloat32;
  if (name == "bf16") return Precision::kBFloat16;
  if (name == "auto") {
    const bool cpu = resolve_device(device).is_cpu();
    return cpu && cpu_has_native_bf16() ? Precision::kBFloat16
                                        : Precision::kFloat32;
  }
  throw ConfigError("--precision " + name + ": use auto, fp32 or bf16");
}

bool cpuinfo_has_native_bf16(const std::string& cpuinfo) {
  std::istringstream lines(cpuinfo);
  std::string line;
  while (std::getline(lines, line)) {
    // "flags\t\t: fpu vme ... avx512_bf16 ..." (one line per CPU; the
    // first is enough: a machine's cores share one instruction set).
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w) {
      if (w == "avx512_bf16" || w == "amx_bf16") return true;
    }
    return false;
  }
  return false;
}

bool cpu_has_native_bf16() {
  static const bool has = [] {
    std::ifstream f("/proc/cpuinfo");
    if (!f) return false;
    std::ostringstream text;
    text << f.rdbuf();
    return cpuinfo_has_native_bf16(text.str());
  }();
  return has;
}

std::string precision_name(Precision p) {
  return p == Precision::kBFloat16 ? "bf16" : "fp32";
}

void set_precision(Precision p) {
  g_precision.store(p);
}

Precision precision() {
  return g_precision.load();
}

AutocastGuard::AutocastGuard(const torch::Device& device, Precision p) {
  if (p != Precision::kBFloat16 || !(device.is_cpu() || device.is_cuda())) {
    return;
  }
  cuda_ = device.is_cuda();
  was_enabled_ = autocast_enabled(cuda_);
  was_dtype_ = autocast_dtype(cuda_);
  set_autocast(cuda_, true, at::kBFloat16);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // As torch.autocast's __exit__: the cast-weight cache lives until the
  // outermost autocast region ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(cuda_, was_enabled_, was_dtype_);
}

}  // namespace cxr
