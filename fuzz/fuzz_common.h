#pragma once
/// Shared by the libFuzzer targets: a scratch path in /dev/shm for the APIs
/// that read files. Torch-free (fuzz_keras_h5 does not link torch); the
/// others include fuzz_torch.h.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace cxr::fuzz {

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
