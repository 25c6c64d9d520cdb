#pragma once
/// Shared by the libFuzzer targets: one CPU thread (the targets measure the
/// parsers, not torch's thread pool) and a scratch path in /dev/shm for the
/// APIs that read files.
#include <torch/torch.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace cxr::fuzz {

inline void init_torch() {
  torch::set_num_threads(1);
  torch::set_num_interop_threads(1);
}

/// A per-process scratch path, so parallel fuzzers (-jobs) do not collide.
inline std::string scratch(const std::string& name) {
  return "/dev/shm/cxr-fuzz-" + std::to_string(::getpid()) + "-" + name;
}

inline void write_file(const std::string& path,
                       const uint8_t* data,
                       size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data),
          static_cast<std::streamsize>(size));
}

}  // namespace cxr::fuzz
