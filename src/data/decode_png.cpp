// PNG decoding with libpng 1.6 from memory: every chunk's CRC checked
// (ancillary ones too), errors through longjmp back into run_png, warnings
// dropped (docs/reliability.md, "Decoders").
#include <png.h>

#include <cstdio>
#include <cstring>

#include "decoders.h"

namespace cxr::data::detail {
namespace {

/// libpng state plus the in-memory source. Lives in the caller's frame: the
/// function that calls setjmp touches only this and `Raw`, never its own
/// non-volatile locals after a longjmp.
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const unsigned char* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  const char* stage = "header";
  char msg[256] = {0};
  std::vector<png_bytep> rows;
  std::vector<png_color> palette;
  PngReader() = default;
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
  ~PngReader() {
    if (png) png_destroy_read_struct(&png, &info, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp m) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->msg, sizeof r->msg, "%s", m ? m : "libpng error");
  png_longjmp(png, 1);
}

/// libpng warnings (odd ICC profiles, benign oddities) are not failures;
/// printing them would break the one-line error contract, so they are
/// dropped. Everything that loses pixels is an error (CRC, data, IEND).
void png_on_warning(png_structp, png_const_charp) {}

void png_read_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) {
    std::snprintf(r->msg, sizeof r->msg, "the file ends %s", r->stage);
    png_longjmp(png, 1);
  }
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

/// Returns false with r.msg set on any libpng error.
bool run_png(PngReader& r, Raw& out, const DecodeLimits& limits) {
  if (setjmp(png_jmpbuf(r.png))) return false;
  png_set_read_fn(r.png, &r, png_read_memory);
  // A checksum mismatch in any chunk is an error: critical chunks already
  // are by default; ancillary ones would be dropped with a warning, but a
  // damaged chunk means a damaged copy, and X-rays are not read half-trusted.
  png_set_crc_action(r.png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
  png_set_user_limits(r.png, static_cast<png_uint_32>(limits.max_side),
                      static_cast<png_uint_32>(limits.max_side));
  r.stage = "inside the header chunks";
  png_read_info(r.png, r.info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, ct = 0, interlace = 0;
  png_get_IHDR(r.png, r.info, &w, &h, &depth, &ct, &interlace, nullptr,
               nullptr);
  if (depth < 8) {
    // Palette indices unpacked as they are (mapped below); gray scaled to
    // 8 bits by bit replication (1-bit 1 -> 255), as stb_image did.
    if (ct == PNG_COLOR_TYPE_PALETTE) {
      png_set_packing(r.png);
    } else {
      png_set_expand_gray_1_2_4_to_8(r.png);
    }
  }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (depth == 16) png_set_swap(r.png);  // PNG is big-endian
#endif
  png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);
  out.w = static_cast<int>(w);
  out.h = static_cast<int>(h);
  out.channels = png_get_channels(r.png, r.info);
  out.sixteen = depth == 16;
  const size_t row_bytes = png_get_rowbytes(r.png, r.info);
  const size_t sample = out.sixteen ? 2 : 1;
  if (row_bytes != size_t(w) * size_t(out.channels) * sample) {
    std::snprintf(r.msg, sizeof r.msg, "unexpected row size");
    return false;
  }
  unsigned char* base = nullptr;
  if (out.sixteen) {
    out.u16.resize(size_t(w) * h * size_t(out.channels));
    base = reinterpret_cast<unsigned char*>(out.u16.data());
  } else {
    out.u8.resize(size_t(w) * h * size_t(out.channels));
    base = out.u8.data();
  }
  r.rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) r.rows[y] = base + size_t(y) * row_bytes;
  r.stage = "inside the image data";
  png_read_image(r.png, r.rows.data());
  // Reads up to IEND, checking the CRCs of every chunk after the image: a
  // file cut after its pixels is still a damaged file.
  r.stage = "before its IEND chunk (the end marker of every PNG)";
  png_read_end(r.png, nullptr);
  if (ct == PNG_COLOR_TYPE_PALETTE) {
    png_colorp pal = nullptr;
    int num = 0;
    if (png_get_PLTE(r.png, r.info, &pal, &num) != PNG_INFO_PLTE) num = 0;
    r.palette.assign(pal, pal + num);
  }
  return true;
}
}  // namespace

Raw decode_png(const std::vector<unsigned char>& bytes,
               const std::string& name,
               const ImageInfo& info,
               const DecodeLimits& limits) {
  PngReader r;
  r.data = bytes.data();
  r.size = bytes.size();
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_on_error,
                                 png_on_warning);
  if (!r.png) throw std::bad_alloc();
  r.info = png_create_info_struct(r.png);
  if (!r.info) throw std::bad_alloc();
  Raw out;
  if (!run_png(r, out, limits)) {
    std::string why = r.msg;
    if (why.find("CRC") != std::string::npos) {
      why += ": a checksum does not match, the file was damaged";
    }
    corrupt(name, "PNG", why);
  }
  if (info.color == "palette") {
    // libpng maps an out-of-range index to black with at most a warning;
    // a palette image pointing past its palette is corrupt.
    const size_t n = r.palette.size();
    if (n == 0) corrupt(name, "PNG", "palette image without a palette");
    uint8_t worst = 0;
    for (uint8_t v : out.u8) worst = std::max(worst, v);
    if (worst >= n) {
      fail(name, "corrupt PNG: palette index " + std::to_string(worst) +
                     " is out of range (the palette has " + std::to_string(n) +
                     " colours); re-copy or remove the file");
    }
    std::vector<uint8_t> rgb(out.u8.size() * 3);
    for (size_t i = 0; i < out.u8.size(); ++i) {
      const png_color& c = r.palette[out.u8[i]];
      rgb[3 * i] = c.red;
      rgb[3 * i + 1] = c.green;
      rgb[3 * i + 2] = c.blue;
    }
    out.u8 = std::move(rgb);
    out.channels = 3;
  }
  return out;
}

}  // namespace cxr::data::detail
