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

/// Makes glibc's malloc keep freed memory for reuse: no mmap for large
/// blocks and no trimming of the heap top. LibTorch frees and re-allocates
/// the same multi-megabyte activation buffers every step; by default each
/// such block is a fresh mmap whose pages the kernel must zero on first
/// touch, and on 2 cores that costs more system time than the maths (measured
/// on MobileNetV2 at 224 px: forward 24 -> 80 images/s; docs/performance.md).
/// Call once at program start. Peak memory is unchanged; freed memory is
/// kept by the process instead of returned to the system. No effect on
/// allocators other than glibc's.
void configure_allocator();

/// Seeds torch (CPU and CUDA) generators.
void seed_everything(uint64_t seed);

}  // namespace cxr
