// NumPy .npy writer (format 1.0) for the raw Grad-CAM maps: outside tools
// (numpy.load) read them without a C++ library, and Debian packages none.
#include <cstring>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/vectors.h"
#include "cxr/explain/explain.h"

namespace cxr::explain {

void write_npy(const std::string& path, const torch::Tensor& map) {
  if (!map.defined() || map.dim() != 2) {
    throw ConfigError("write_npy needs a 2-D map [rows, cols], got " +
                      shape_of(map) + " for " + path);
  }
  auto m = map.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  // Header: magic, version 1.0, little-endian uint16 length, then a Python
  // dict literal padded with spaces and ended by '\n' so that the data
  // starts at a multiple of 64 bytes (what numpy itself writes).
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                     std::to_string(m.size(0)) + ", " +
                     std::to_string(m.size(1)) + "), }";
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>((dict.size() >> 8) & 0xff);
  out += dict;
  // Data: float32, little-endian whatever the host.
  const float* v = m.data_ptr<float>();
  for (int64_t i = 0; i < m.numel(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    for (int b = 0; b < 4; ++b)
      out += static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  write_text_atomic(path, out);
}

}  // namespace cxr::explain
