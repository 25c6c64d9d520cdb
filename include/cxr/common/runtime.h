#pragma once
/// Device and thread selection shared by every subcommand.
#include <torch/torch.h>

#include <string>

namespace cxr {

/// Resolves `auto|cpu|cuda|cuda:N` to a device; `auto` picks CUDA when
/// available. Throws ConfigError for unknown names or a missing GPU.
torch::Device resolve_device(const std::string& name);

/// Sets intra-op threads; `threads <= 0` means all hardware threads.
/// Returns the number of threads in effect.
int configure_threads(int threads);

/// Seeds torch (CPU and CUDA) generators.
void seed_everything(uint64_t seed);

}  // namespace cxr
