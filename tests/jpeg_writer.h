#pragma once
// Test images encoded with the reference libjpeg (the unit tests link it):
// the decoders, image_io and input_check suites write their JPEGs here.
#include <jpeglib.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace cxr::testing {

/// Encodes 8-bit pixels (`components` per pixel, rows of `w`) with libjpeg
/// in memory.
inline std::string jpeg_of(int w,
                           int h,
                           int components,
                           J_COLOR_SPACE space,
                           const std::vector<uint8_t>& px,
                           int quality = 95) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(w);
  c.image_height = static_cast<JDIMENSION>(h);
  c.input_components = components;
  c.in_color_space = space;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) +
                   size_t(c.next_scanline) * size_t(w) * size_t(components);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

}  // namespace cxr::testing
