#include "cxr/common/base64.h"

#include <cstdint>

namespace cxr {
namespace {

std::string encode(const unsigned char* in, size_t n) {
  static const char* k =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) |
                       uint32_t{in[i + 2]};
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i < n) {  // one or two bytes left: pad to four characters
    uint32_t v = uint32_t{in[i]} << 16;
    if (i + 1 < n) v |= uint32_t{in[i + 1]} << 8;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < n ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace

std::string base64(std::string_view bytes) {
  return encode(reinterpret_cast<const unsigned char*>(bytes.data()),
                bytes.size());
}

std::string base64(const std::vector<unsigned char>& bytes) {
  return encode(bytes.data(), bytes.size());
}

}  // namespace cxr
