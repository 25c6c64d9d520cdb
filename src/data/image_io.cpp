// Decoding with stb_image (Debian libstb), header sniffing for honest
// bit-depth/colour reporting, antialiased resizing as a tensor op.
#include "cxr/data/image_io.h"

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
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

std::string png_color(int color_type) {
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

/// Fills `info` from the file header; throws for unknown or bad headers.
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
    info.width = static_cast<int>(be32(b.data() + 16));
    info.height = static_cast<int>(be32(b.data() + 20));
    info.bit_depth = b[24];
    int ct = b[25];
    info.color = png_color(ct);
    info.channels = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 3 : ct == 4 ? 2 : 4;
    if (be32(b.data() + 16) > 0x7fffffffu || be32(b.data() + 20) > 0x7fffffffu)
      fail(name, "PNG header has an impossible size");
    return info;
  }
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_memory(b.data(), static_cast<int>(b.size()), &w, &h,
                             &c)) {
    const char* r = stbi_failure_reason();
    fail(name, std::string("not a readable image (PNG, JPEG or BMP): ") +
                   (r ? r : "unknown format"));
  }
  info.width = w;
  info.height = h;
  info.channels = c;
  info.bit_depth = 8;
  if (b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8) {
    info.format = "jpeg";
  } else if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') {
    info.format = "bmp";
  } else {
    info.format = "other";
  }
  info.color = c == 1   ? "gray"
               : c == 2 ? "gray+alpha"
               : c == 3 ? "rgb"
                        : "rgba";
  return info;
}

void check_limits(const ImageInfo& info,
                  const std::string& name,
                  const DecodeLimits& limits) {
  if (info.width <= 0 || info.height <= 0) {
    fail(name, "header claims an empty image (" + std::to_string(info.width) +
                   "x" + std::to_string(info.height) + ")");
  }
  int64_t px = int64_t(info.width) * int64_t(info.height);
  if (info.width > limits.max_side || info.height > limits.max_side ||
      px > limits.max_pixels) {
    fail(name, "header claims " + std::to_string(info.width) + "x" +
                   std::to_string(info.height) + " pixels, over the limit of " +
                   std::to_string(limits.max_side) +
                   " px per side; downscale it first or remove it");
  }
}

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    throw DataError("image '" + path +
                    "': cannot open (missing or not readable)");
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

/// stb's own colour-to-gray weights (stbi__compute_y), so a colour file
/// decoded here gives the same gray pixels as stb's 1-channel conversion.
template <typename T>
T stb_luma(int r, int g, int b) {
  return static_cast<T>(((r * 77) + (g * 150) + (29 * b)) >> 8);
}

/// One pass over `n` pixels of `c` interleaved channels (c >= 3, alpha
/// ignored): writes stb's gray into `gray` (may alias `px`: pixel i is
/// written at index i after its channels at i * c are read; nullptr = skip)
/// and returns the mean channel spread max - min, divided by `full`.
template <typename T>
double gray_and_chroma(T* px, size_t n, int c, double full, T* gray) {
  double spread = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const T* s = px + i * static_cast<size_t>(c);
    const int r = s[0], g = s[1], b = s[2];
    if (gray) gray[i] = stb_luma<T>(r, g, b);
    spread += std::max({r, g, b}) - std::min({r, g, b});
  }
  return n ? spread / (double(n) * full) : 0.0;
}

/// Decodes to one gray channel. For colour files (rgb, rgba, palette; colour
/// BMP) the file's channels are decoded once and converted here with stb's
/// weights, measuring the chroma on the way; stb turns a colour JPEG into
/// gray from its Y plane, so there a second RGB decode measures the chroma
/// and the gray pixels stay exactly stb's. `load(req, &w, &h, &c)` wraps an
/// stbi_load*_from_memory call.
template <typename T, typename Load>
std::unique_ptr<T, StbFree> load_gray(const Load& load,
                                      ImageInfo* info,
                                      const std::string& name,
                                      double full,
                                      int* w,
                                      int* h) {
  auto check = [&](T* p) {
    if (!p) {
      const char* r = stbi_failure_reason();
      fail(name, std::string("corrupt or truncated (") + (r ? r : "?") +
                     "); re-copy or remove the file");
    }
  };
  int c = 0;
  const bool colour = info->channels >= 3;
  if (colour && info->format != "jpeg") {
    std::unique_ptr<T, StbFree> px(load(0, w, h, &c));
    check(px.get());
    if (c >= 3) {
      info->chroma = gray_and_chroma<T>(px.get(), size_t(*w) * size_t(*h), c,
                                        full, px.get());
      return px;
    }
  }
  std::unique_ptr<T, StbFree> px(load(1, w, h, &c));
  check(px.get());
  if (colour && info->format == "jpeg") {
    int w3 = 0, h3 = 0;
    std::unique_ptr<T, StbFree> rgb(load(3, &w3, &h3, &c));
    if (rgb) {
      info->chroma = gray_and_chroma<T>(rgb.get(), size_t(w3) * size_t(h3), 3,
                                        full, nullptr);
    }
  }
  return px;
}

}  // namespace

GrayImage decode_gray(const std::vector<unsigned char>& bytes,
                      const std::string& name,
                      const DecodeLimits& limits) {
  GrayImage out;
  out.info = sniff(bytes, name);
  check_limits(out.info, name, limits);
  if (bytes.size() > static_cast<size_t>(INT32_MAX))
    fail(name, "file too large");
  const int len = static_cast<int>(bytes.size());
  int w = 0, h = 0;
  if (stbi_is_16_bit_from_memory(bytes.data(), len)) {
    auto px = load_gray<stbi_us>(
        [&](int req, int* pw, int* ph, int* pc) {
          return stbi_load_16_from_memory(bytes.data(), len, pw, ph, pc, req);
        },
        &out.info, name, 65535.0, &w, &h);
    // uint16 is not a torch dtype in 1.13: widen through int32.
    std::vector<int32_t> wide(static_cast<size_t>(w) * h);
    for (size_t i = 0; i < wide.size(); ++i) wide[i] = px.get()[i];
    out.pixels = torch::from_blob(wide.data(), {h, w}, torch::kInt32)
                     .to(torch::kFloat32)
                     .div_(65535.0f);
    out.pixel_hash = fnv1a64(px.get(), wide.size() * sizeof(stbi_us),
                             fnv1a64(&w, sizeof w) ^ uint64_t(h) << 32);
  } else {
    auto px = load_gray<stbi_uc>(
        [&](int req, int* pw, int* ph, int* pc) {
          return stbi_load_from_memory(bytes.data(), len, pw, ph, pc, req);
        },
        &out.info, name, 255.0, &w, &h);
    out.pixels = torch::from_blob(px.get(), {h, w}, torch::kUInt8)
                     .to(torch::kFloat32)
                     .div_(255.0f);
    out.pixel_hash = fnv1a64(px.get(), static_cast<size_t>(w) * h,
                             fnv1a64(&w, sizeof w) ^ uint64_t(h) << 32);
  }
  if (w != out.info.width || h != out.info.height) {
    fail(name, "decoded size differs from the header; file is corrupt");
  }
  return out;
}

GrayImage read_gray(const std::string& path, const DecodeLimits& limits) {
  return decode_gray(read_bytes(path), path, limits);
}

torch::Tensor read_rgb(const std::string& path, const DecodeLimits& limits) {
  auto bytes = read_bytes(path);
  ImageInfo info = sniff(bytes, path);
  check_limits(info, path, limits);
  int w = 0, h = 0, c = 0;
  std::unique_ptr<stbi_uc, StbFree> px(stbi_load_from_memory(
      bytes.data(), static_cast<int>(bytes.size()), &w, &h, &c, 3));
  if (!px) {
    const char* r = stbi_failure_reason();
    fail(path, std::string("corrupt or truncated (") + (r ? r : "?") + ")");
  }
  return torch::from_blob(px.get(), {h, w, 3}, torch::kUInt8)
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
