// JPEG decoding with libjpeg-turbo from memory: errors through its error
// manager with setjmp/longjmp, corrupt-data warnings turned into errors, a
// cap on progressive scans (docs/reliability.md, "Decoders").
#include <cstdio>  // FILE and size_t, which jpeglib.h needs first

#include <jerror.h>
#include <jpeglib.h>

#include <csetjmp>
#include <cstring>

#include "decoders.h"

namespace cxr::data::detail {
namespace {

/// libjpeg state; lives in the caller's frame (see PngReader in
/// decode_png.cpp).
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
}  // namespace

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

}  // namespace cxr::data::detail
