// Sniffing, limits and dispatch to one decoder per library (decoders.h):
// libpng 1.6 (decode_png.cpp) and libjpeg-turbo (decode_jpeg.cpp), the system
// libraries OSS-Fuzz keeps fuzzing; BMP alone still goes through stb_image,
// gated by its "BM" magic (decode_bmp.cpp; docs/reliability.md, "Decoders").
// Header sniffing decides the format by content, and the size limits are
// checked from the header before any pixel buffer is allocated. Antialiased
// resizing is a tensor op; PNG writing (our own pixels, never untrusted
// input) stays with stb_image_write.
#include "cxr/data/image_io.h"

#include <stb_image_write.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "decoders.h"

namespace cxr::data {
namespace detail {

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

}  // namespace detail

namespace {

using detail::check_limits;
using detail::decode_bmp;
using detail::decode_jpeg;
using detail::decode_png;
using detail::fail;
using detail::Raw;

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

/// Fills `info` from the file header; throws for unknown or bad headers.
/// JPEG sizes come from libjpeg's own header parse in decode_jpeg.
ImageInfo sniff(const std::vector<unsigned char>& b, const std::string& name) {
  ImageInfo info;
  static const unsigned char kPngSig[8] = {0x89, 'P',  'N',  'G',
                                           '\r', '\n', 0x1a, '\n'};
  if (b.empty()) fail(name, "file is empty (0 bytes); re-copy or remove it");
  // First: a DICOM preamble is 128 free bytes that may hold another
  // format's magic (TIFF/DICOM dual files).
  if (b.size() >= 132 && std::memcmp(b.data() + 128, "DICM", 4) == 0) {
    info.format = "dicom";
    return info;
  }
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
    return detail::sniff_bmp(b, name);
  }
  if (detail::looks_like_dicom(b, name)) {
    info.format = "dicom";
    return info;
  }
  fail(name, "not a readable image (PNG, JPEG or BMP): the file is " +
                 detail::describe_unknown(b));
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
  } else if (info.format == "dicom") {
    raw = detail::decode_dicom(bytes, name, limits, info);
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
