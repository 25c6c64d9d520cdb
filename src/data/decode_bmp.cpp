// BMP through stb_image, the one format still decoded by stb: sniffing only
// lets files starting "BM" reach it (docs/reliability.md, "Decoders").
#include <stb_image.h>

#include <cstdint>
#include <memory>

#include "decoders.h"

namespace cxr::data::detail {
namespace {

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

}  // namespace

ImageInfo sniff_bmp(const std::vector<unsigned char>& b,
                    const std::string& name) {
  ImageInfo info;
  int w = 0, h = 0, c = 0;
  if (b.size() > static_cast<size_t>(INT32_MAX) ||
      !stbi_info_from_memory(b.data(), static_cast<int>(b.size()), &w, &h,
                             &c)) {
    const std::string what = describe_unknown(b);
    if (what.rfind("a text file", 0) == 0) {
      fail(name,
           "not a readable image (PNG, JPEG or BMP): the file is " + what);
    }
    const char* r = stbi_failure_reason();
    corrupt(name, "BMP", r ? r : "unreadable header");
  }
  info.format = "bmp";
  info.width = w;
  info.height = h;
  info.channels = c;
  info.bit_depth = 8;
  info.color = c == 1   ? "gray"
               : c == 2 ? "gray+alpha"
               : c == 3 ? "rgb"
                        : "rgba";
  return info;
}

Raw decode_bmp(const std::vector<unsigned char>& bytes,
               const std::string& name) {
  Raw out;
  int c = 0;
  std::unique_ptr<stbi_uc, StbFree> px(stbi_load_from_memory(
      bytes.data(), static_cast<int>(bytes.size()), &out.w, &out.h, &c, 0));
  if (!px) {
    const char* r = stbi_failure_reason();
    corrupt(name, "BMP", r ? r : "stb_image error");
  }
  out.channels = c;
  out.u8.assign(px.get(), px.get() + size_t(out.w) * size_t(out.h) * size_t(c));
  return out;
}

}  // namespace cxr::data::detail
