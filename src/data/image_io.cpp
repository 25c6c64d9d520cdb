// Decoding with the system libraries that OSS-Fuzz keeps fuzzing: libpng 1.6
// (every chunk's CRC checked, ancillary ones too) and libjpeg-turbo (errors
// through its error manager with setjmp/longjmp, corrupt-data warnings turned
// into errors). BMP alone still goes through stb_image, gated by its "BM"
// magic (docs/reliability.md, "Decoders"). Header sniffing decides the format
// by content, and the size limits are checked from the header before any
// pixel buffer is allocated. Antialiased resizing is a tensor op; PNG writing
// (our own pixels, never untrusted input) stays with stb_image_write.
#include "cxr/data/image_io.h"

#include <cstdio>  // FILE and size_t, which jpeglib.h needs first

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <stb_image.h>
#include <stb_image_write.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstring>
#include <fstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"

namespace cxr::data {
namespace {

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) |
         (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string png_color_name(int color_type) {
  switch (color_type) {
    case 0:
      return "gray";
    case 2:
      return "rgb";
    case 3:
      return "palette";
    case 4:
      return "gray+alpha";
    case 6:
      return "rgba";
    default:
      return "unknown";
  }
}

[[noreturn]] void fail(const std::string& name, const std::string& why) {
  throw DataError("image '" + name + "': " + why);
}

[[noreturn]] void corrupt(const std::string& name,
                          const std::string& format,
                          const std::string& why) {
  fail(name, "corrupt or truncated " + format + " (" + why +
                 "); re-copy or remove the file");
}

/// Names what a file that is not PNG, JPEG or BMP looks like, so the
/// message says what to do (a text file, a DICOM that needs converting...).
std::string describe_unknown(const std::vector<unsigned char>& b) {
  // `magic` may hold NUL bytes: its length is given.
  auto at = [&](size_t off, const char* magic, size_t n) {
    return b.size() >= off + n && std::memcmp(b.data() + off, magic, n) == 0;
  };
  if (at(0, "GIF8", 4)) return "a GIF image; convert it to PNG";
  if (at(0, "II*\0", 4) || at(0, "MM\0*", 4)) {
    return "a TIFF image; convert it to PNG";
  }
  if (at(128, "DICM", 4)) return "a DICOM file; convert it to PNG first";
  if (at(0, "RIFF", 4) && at(8, "WEBP", 4)) {
    return "a WebP image; convert it to PNG";
  }
  if (at(0, "\0\0\0\x0cjP  ", 8) || at(0, "\xff\x4f\xff\x51", 4)) {
    return "a JPEG 2000 image; convert it to PNG";
  }
  // Text: printable ASCII, whitespace or UTF-8 lead/continuation bytes.
  const size_t n = std::min<size_t>(b.size(), 512);
  bool text = true;
  for (size_t i = 0; i < n && text; ++i) {
    const unsigned char c = b[i];
    text = c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c != 0x7f);
  }
  if (text) {
    std::string head;
    // The first line, at most 24 bytes, as the file's own words.
    for (size_t i = 0; i < std::min<size_t>(n, 24); ++i) {
      const char c = static_cast<char>(b[i]);
      if (c == '\n' || c == '\r') break;
      head += (c == '\t' || c == '"') ? ' ' : c;
    }
    return "a text file (starts \"" + head + "\"), not an image";
  }
  char hex[40];
  std::snprintf(hex, sizeof hex, "%02x %02x %02x %02x", b[0],
                b.size() > 1 ? b[1] : 0, b.size() > 2 ? b[2] : 0,
                b.size() > 3 ? b[3] : 0);
  return std::string("of an unknown format (first bytes ") + hex + ")";
}

/// Fills `info` from the file header; throws for unknown or bad headers.
/// JPEG sizes come from libjpeg's own header parse in decode_jpeg.
ImageInfo sniff(const std::vector<unsigned char>& b, const std::string& name) {
  ImageInfo info;
  static const unsigned char kPngSig[8] = {0x89, 'P',  'N',  'G',
                                           '\r', '\n', 0x1a, '\n'};
  if (b.empty()) fail(name, "file is empty (0 bytes); re-copy or remove it");
  if (b.size() >= 8 && std::memcmp(b.data(), kPngSig, 8) == 0) {
    if (b.size() < 33 || std::memcmp(b.data() + 12, "IHDR", 4) != 0) {
      fail(name, "truncated PNG header; re-copy or remove the file");
    }
    info.format = "png";
    if (be32(b.data() + 16) > 0x7fffffffu || be32(b.data() + 20) > 0x7fffffffu)
      fail(name, "PNG header has an impossible size");
    info.width = static_cast<int>(be32(b.data() + 16));
    info.height = static_cast<int>(be32(b.data() + 20));
    info.bit_depth = b[24];
    int ct = b[25];
    info.color = png_color_name(ct);
    info.channels = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 3 : ct == 4 ? 2 : 4;
    return info;
  }
  if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) {
    info.format = "jpeg";
    info.bit_depth = 8;
    return info;
  }
  if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') {
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
  fail(name, "not a readable image (PNG, JPEG or BMP): the file is " +
                 describe_unknown(b));
}

std::string thousands(int64_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) {
    s.insert(static_cast<size_t>(i), ",");
  }
  return s;
}

void check_limits(const ImageInfo& info,
                  const std::string& name,
                  const DecodeLimits& limits) {
  if (info.width <= 0 || info.height <= 0) {
    fail(name, "header claims an empty image (" + std::to_string(info.width) +
                   "x" + std::to_string(info.height) + ")");
  }
  const int64_t px = int64_t(info.width) * int64_t(info.height);
  const std::string dims =
      std::to_string(info.width) + " x " + std::to_string(info.height);
  if (px > limits.max_pixels) {
    char mp[64], cap[64];
    std::snprintf(mp, sizeof mp, "%.1f", double(px) / (1024.0 * 1024.0));
    std::snprintf(cap, sizeof cap, "%g",
                  double(limits.max_pixels) / (1024.0 * 1024.0));
    throw DataError("image '" + name + "' is " + dims + " = " + mp +
                    " megapixels; the limit is " + cap + " megapixels (" +
                    thousands(limits.max_pixels) +
                    " pixels); downscale it first or remove it");
  }
  if (info.width > limits.max_side || info.height > limits.max_side) {
    throw DataError("image '" + name + "' is " + dims +
                    " pixels; the limit is " + std::to_string(limits.max_side) +
                    " pixels per side; downscale it first or remove it");
  }
}

/// Pixels as a decoder hands them over: `channels` interleaved samples per
/// pixel (1 gray, 2 gray+alpha, 3 rgb, 4 rgba), 8-bit in `u8` or 16-bit
/// (native byte order) in `u16`. `ycc`: a JPEG's Y, Cb, Cr planes as
/// stored (gray is Y, exactly what stb_image returned for gray requests).
struct Raw {
  int w = 0;
  int h = 0;
  int channels = 0;
  bool sixteen = false;
  bool ycc = false;
  std::vector<uint8_t> u8;
  std::vector<uint16_t> u16;
};

// ---- PNG -----------------------------------------------------------------

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

// ---- JPEG ----------------------------------------------------------------

/// libjpeg state; lives in the caller's frame (see PngReader).
struct JpegReader {
  struct Err {
    jpeg_error_mgr pub;  // first: libjpeg sees a jpeg_error_mgr*
    jmp_buf jump;
  };
  jpeg_decompress_struct cinfo;
  Err err;
  jpeg_progress_mgr progress;
  char msg[JMSG_LENGTH_MAX + 64] = {0};
  bool created = false;
  JpegReader() {
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&err, 0, sizeof err);
    std::memset(&progress, 0, sizeof progress);
  }
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;
  ~JpegReader() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

/// libjpeg's default error_exit calls exit(); ours jumps back to run_jpeg.
void jpeg_on_error(j_common_ptr c) {
  auto* r = static_cast<JpegReader*>(c->client_data);
  (*c->err->format_message)(c, r->msg);
  std::longjmp(r->err.jump, 1);
}

/// Warnings (level -1) about corrupt data mean libjpeg is inventing pixels
/// (a truncated file is padded with gray): errors here. Only warnings about
/// metadata it can ignore safely pass. Trace messages are dropped.
void jpeg_on_message(j_common_ptr c, int level) {
  if (level >= 0) return;
  switch (c->err->msg_code) {
    case JWRN_ADOBE_XFORM:
    case JWRN_JFIF_MAJOR:
    case JWRN_BOGUS_ICC:
      return;
    default:
      jpeg_on_error(c);
  }
}

/// Progressive JPEGs can hold thousands of tiny scans that take minutes to
/// decode (a known libjpeg-turbo DoS); real files have a dozen or so.
constexpr int kMaxJpegScans = 500;
void jpeg_on_progress(j_common_ptr c) {
  if (!c->is_decompressor) return;
  const int scan = reinterpret_cast<j_decompress_ptr>(c)->input_scan_number;
  if (scan > kMaxJpegScans) {
    auto* r = static_cast<JpegReader*>(c->client_data);
    std::snprintf(r->msg, sizeof r->msg, "more than %d progressive scans",
                  kMaxJpegScans);
    std::longjmp(r->err.jump, 1);
  }
}

/// Returns false with r.msg set on any libjpeg error. Throws DataError (from
/// our own code, not through libjpeg) when the header is over the limits.
bool run_jpeg(JpegReader& r,
              const std::vector<unsigned char>& bytes,
              const std::string& name,
              const DecodeLimits& limits,
              bool want_rgb,
              ImageInfo& info,
              Raw& out) {
  if (setjmp(r.err.jump)) return false;
  r.created = true;
  r.cinfo.client_data = &r;  // kept by jpeg_create_decompress
  jpeg_create_decompress(&r.cinfo);
  r.progress.progress_monitor = jpeg_on_progress;
  r.cinfo.progress = &r.progress;
  jpeg_mem_src(&r.cinfo, bytes.data(),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&r.cinfo, TRUE);
  j_decompress_ptr d = &r.cinfo;
  info.width = static_cast<int>(d->image_width);
  info.height = static_cast<int>(d->image_height);
  info.channels = d->num_components == 1 ? 1 : 3;
  info.color = info.channels == 1 ? "gray" : "rgb";
  check_limits(info, name, limits);
  bool cmyk = false;
  switch (d->jpeg_color_space) {
    case JCS_GRAYSCALE:
      d->out_color_space = JCS_GRAYSCALE;
      break;
    case JCS_YCbCr:
      // Gray is the Y plane as stored (what stb_image returned); the chroma
      // planes only feed the colour measure.
      d->out_color_space = want_rgb ? JCS_RGB : JCS_YCbCr;
      out.ycc = !want_rgb;
      break;
    case JCS_RGB:
      d->out_color_space = JCS_RGB;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      d->out_color_space = JCS_CMYK;
      cmyk = true;
      break;
    default:
      std::snprintf(r.msg, sizeof r.msg,
                    "unsupported colour space with %d "
                    "components",
                    d->num_components);
      return false;
  }
  jpeg_start_decompress(d);
  const int oc = d->output_components;
  out.w = static_cast<int>(d->output_width);
  out.h = static_cast<int>(d->output_height);
  out.channels = oc;
  out.u8.resize(size_t(out.w) * size_t(out.h) * size_t(oc));
  const size_t stride = size_t(out.w) * size_t(oc);
  while (d->output_scanline < d->output_height) {
    JSAMPROW row = out.u8.data() + size_t(d->output_scanline) * stride;
    if (jpeg_read_scanlines(d, &row, 1) != 1) {
      std::snprintf(r.msg, sizeof r.msg, "no more scanlines");
      return false;
    }
  }
  // Reads to the EOI marker: a file cut after the last row still warns
  // (JWRN_JPEG_EOF), which is an error above.
  jpeg_finish_decompress(d);
  if (cmyk) {
    // Adobe writes inverted CMYK; R = C * K / 255 (stb_image's rule).
    auto mul = [](unsigned x, unsigned y) {
      const unsigned t = x * y + 128;
      return static_cast<uint8_t>((t + (t >> 8)) >> 8);
    };
    const size_t n = size_t(out.w) * size_t(out.h);
    std::vector<uint8_t> rgb(n * 3);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* s = &out.u8[4 * i];
      rgb[3 * i] = mul(s[0], s[3]);
      rgb[3 * i + 1] = mul(s[1], s[3]);
      rgb[3 * i + 2] = mul(s[2], s[3]);
    }
    out.u8 = std::move(rgb);
    out.channels = 3;
  }
  return true;
}

Raw decode_jpeg(const std::vector<unsigned char>& bytes,
                const std::string& name,
                const DecodeLimits& limits,
                bool want_rgb,
                ImageInfo& info) {
  JpegReader r;
  r.cinfo.err = jpeg_std_error(&r.err.pub);
  r.err.pub.error_exit = jpeg_on_error;
  r.err.pub.emit_message = jpeg_on_message;
  Raw out;
  if (!run_jpeg(r, bytes, name, limits, want_rgb, info, out)) {
    corrupt(name, "JPEG", r.msg[0] ? r.msg : "libjpeg error");
  }
  return out;
}

// ---- BMP (stb_image) -------------------------------------------------------

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

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

/// Sniffs, checks the limits from the header and decodes with the library
/// for the format. Fills `info` (format, size, channels, colour, depth).
Raw decode_raw(const std::vector<unsigned char>& bytes,
               const std::string& name,
               const DecodeLimits& limits,
               bool want_rgb,
               ImageInfo& info) {
  info = sniff(bytes, name);
  Raw raw;
  if (info.format == "jpeg") {
    raw = decode_jpeg(bytes, name, limits, want_rgb, info);
  } else {
    check_limits(info, name, limits);
    raw = info.format == "png" ? decode_png(bytes, name, info, limits)
                               : decode_bmp(bytes, name);
  }
  if (raw.w != info.width || raw.h != info.height) {
    fail(name, "decoded size differs from the header; file is corrupt");
  }
  return raw;
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    throw DataError(
        "image '" + path + "': cannot open (" +
        (e == ELOOP ? std::string("a symlink loop") : std::strerror(e)) + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    throw DataError("image '" + path + "': is a folder, not an image file");
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    throw DataError("image '" + path + "': cannot open (" +
                    std::strerror(errno) + "; missing or not readable)");
  }
  std::streamoff n = in.tellg();
  if (n < 0) throw DataError("image '" + path + "': cannot read size");
  if (n > (int64_t(1) << 30)) {
    throw DataError("image '" + path + "': file is over 1 GiB; not an X-ray");
  }
  std::vector<unsigned char> bytes(static_cast<size_t>(n));
  in.seekg(0);
  if (n > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), n)) {
    throw DataError("image '" + path + "': read error");
  }
  return bytes;
}

torch::Tensor to_uint8_chw(const torch::Tensor& image) {
  torch::Tensor t = image.detach().to(torch::kCPU);
  if (t.dim() == 2) t = t.unsqueeze(0);
  if (t.dim() != 3 || (t.size(0) != 1 && t.size(0) != 3 && t.size(0) != 4)) {
    throw IoError(
        "write_png: expected [H,W] or [C,H,W] with C in {1,3,4}, got " +
        std::to_string(t.dim()) + "-d tensor");
  }
  if (t.scalar_type() != torch::kUInt8) {
    t = (t.to(torch::kFloat32).clamp(0, 1) * 255.0f).round().to(torch::kUInt8);
  }
  return t.permute({1, 2, 0}).contiguous();  // HWC
}

void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<std::vector<unsigned char>*>(ctx);
  auto* p = static_cast<unsigned char*>(data);
  out->insert(out->end(), p, p + size);
}

/// stb_image's colour-to-gray weights (stbi__compute_y), kept from the
/// stb decoder so gray pixels, their hashes and caches do not change.
template <typename T>
T stb_luma(int r, int g, int b) {
  return static_cast<T>(((r * 77) + (g * 150) + (29 * b)) >> 8);
}

uint8_t clamp_u8(int v) {
  return static_cast<uint8_t>(std::clamp(v, 0, 255));
}

/// JFIF YCbCr -> RGB in 16.16 fixed point (libjpeg's rounding to +-1).
void ycc_to_rgb(int y, int cb, int cr, int* r, int* g, int* b) {
  cb -= 128;
  cr -= 128;
  *r = y + ((91881 * cr + 32768) >> 16);
  *g = y + ((-22554 * cb - 46802 * cr + 32768) >> 16);
  *b = y + ((116130 * cb + 32768) >> 16);
  *r = clamp_u8(*r);
  *g = clamp_u8(*g);
  *b = clamp_u8(*b);
}

/// One pass over `n` pixels of `c` interleaved channels: writes gray into
/// `px` itself (pixel i at index i, after its channels at i * c were read)
/// and returns the mean channel spread max - min over R, G, B divided by
/// `full` (0 for gray files; alpha ignored).
template <typename T>
double to_gray_in_place(T* px, size_t n, int c, bool ycc, double full) {
  if (c <= 2) {  // gray or gray+alpha: keep the gray sample
    for (size_t i = 0; i < n; ++i) px[i] = px[i * static_cast<size_t>(c)];
    return 0.0;
  }
  double spread = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const T* s = px + i * static_cast<size_t>(c);
    int r = s[0], g = s[1], b = s[2];
    T gray;
    if (ycc) {
      gray = s[0];
      ycc_to_rgb(s[0], s[1], s[2], &r, &g, &b);
    } else {
      gray = stb_luma<T>(r, g, b);
    }
    px[i] = gray;
    spread += std::max({r, g, b}) - std::min({r, g, b});
  }
  return n ? spread / (double(n) * full) : 0.0;
}

}  // namespace

GrayImage decode_gray(const std::vector<unsigned char>& bytes,
                      const std::string& name,
                      const DecodeLimits& limits) {
  GrayImage out;
  Raw raw = decode_raw(bytes, name, limits, false, out.info);
  const int w = raw.w, h = raw.h;
  const size_t n = size_t(w) * size_t(h);
  const uint64_t seed = fnv1a64(&w, sizeof w) ^ uint64_t(h) << 32;
  if (raw.sixteen) {
    out.info.chroma = to_gray_in_place<uint16_t>(raw.u16.data(), n,
                                                 raw.channels, false, 65535.0);
    // uint16 is not a torch dtype in 1.13: widen through int32.
    std::vector<int32_t> wide(raw.u16.begin(),
                              raw.u16.begin() + static_cast<std::ptrdiff_t>(n));
    out.pixels = torch::from_blob(wide.data(), {h, w}, torch::kInt32)
                     .to(torch::kFloat32)
                     .div_(65535.0f);
    out.pixel_hash = fnv1a64(raw.u16.data(), n * sizeof(uint16_t), seed);
  } else {
    out.info.chroma = to_gray_in_place<uint8_t>(raw.u8.data(), n, raw.channels,
                                                raw.ycc, 255.0);
    out.pixels = torch::from_blob(raw.u8.data(), {h, w}, torch::kUInt8)
                     .to(torch::kFloat32)
                     .div_(255.0f);
    out.pixel_hash = fnv1a64(raw.u8.data(), n, seed);
  }
  return out;
}

GrayImage read_gray(const std::string& path, const DecodeLimits& limits) {
  return decode_gray(read_bytes(path), path, limits);
}

torch::Tensor read_rgb(const std::string& path, const DecodeLimits& limits) {
  const auto bytes = read_bytes(path);
  ImageInfo info;
  Raw raw = decode_raw(bytes, path, limits, true, info);
  const size_t n = size_t(raw.w) * size_t(raw.h);
  const size_t c = static_cast<size_t>(raw.channels);
  std::vector<uint8_t> rgb(n * 3);
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < 3; ++k) {
      // Gray and gray+alpha repeat the gray sample; alpha is dropped; 16-bit
      // keeps the high byte (stb_image's 16 -> 8 rule).
      const size_t src = i * c + (c >= 3 ? k : 0);
      rgb[3 * i + k] =
          raw.sixteen ? static_cast<uint8_t>(raw.u16[src] >> 8) : raw.u8[src];
    }
  }
  return torch::from_blob(rgb.data(), {raw.h, raw.w, 3}, torch::kUInt8)
      .permute({2, 0, 1})
      .to(torch::kFloat32)
      .div_(255.0f)
      .contiguous();
}

torch::Tensor resize_square(const torch::Tensor& image, int size) {
  if (size <= 0) throw ConfigError("--size must be positive");
  const int64_t rank = image.dim();
  torch::Tensor x = image;
  if (rank == 2) x = x.unsqueeze(0).unsqueeze(0);
  if (rank == 3) x = x.unsqueeze(0);
  if (x.dim() != 4) {
    throw ConfigError("resize_square: expected a 2-, 3- or 4-d image tensor");
  }
  if (x.size(2) != size || x.size(3) != size) {
    namespace F = torch::nn::functional;
    const bool down = x.size(2) > size || x.size(3) > size;
    x = F::interpolate(x.to(torch::kFloat32),
                       F::InterpolateFuncOptions()
                           .size(std::vector<int64_t>{size, size})
                           .mode(torch::kBilinear)
                           .align_corners(false)
                           .antialias(down))
            .clamp_(0.0, 1.0);
  }
  if (rank == 2) return x[0][0];
  if (rank == 3) return x[0];
  return x;
}

std::vector<unsigned char> encode_png(const torch::Tensor& image) {
  torch::Tensor hwc = to_uint8_chw(image);
  const int h = static_cast<int>(hwc.size(0));
  const int w = static_cast<int>(hwc.size(1));
  const int c = static_cast<int>(hwc.size(2));
  std::vector<unsigned char> out;
  if (!stbi_write_png_to_func(append_bytes, &out, w, h, c, hwc.data_ptr(),
                              w * c)) {
    throw IoError("PNG encoding failed");
  }
  return out;
}

void write_png(const std::string& path, const torch::Tensor& image) {
  auto bytes = encode_png(image);
  write_text_atomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace cxr::data
