// The cairo canvas shared by every figure: surfaces, atomic PNG writing,
// fonts and text layout; and render_text_page, which is only text.
#include <cairo.h>

#include <algorithm>
#include <cmath>

#include "canvas.h"
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/viz/plot.h"

namespace cxr::viz {
namespace detail {
namespace {

constexpr char kFont[] = "DejaVu Sans";
constexpr int kMaxSurfaceSide = 32767;  // cairo's limit for image surfaces

}  // namespace

Surface new_surface(int width, int height, const std::string& png_path) {
  if (width < 1 || height < 1 || width > kMaxSurfaceSide ||
      height > kMaxSurfaceSide) {
    throw ConfigError("figure '" + png_path + "' would be " +
                      std::to_string(width) + "x" + std::to_string(height) +
                      " px; at most " + std::to_string(kMaxSurfaceSide) +
                      " px per side are possible (use fewer charts or "
                      "tiles, or smaller ones)");
  }
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height));
  if (cairo_surface_status(s.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError(
        "cannot allocate a " + std::to_string(width) + "x" +
        std::to_string(height) + " px image for '" + png_path +
        "': " + cairo_status_to_string(cairo_surface_status(s.get())));
  }
  return s;
}

Context new_context(cairo_surface_t* surface) {
  Context cr(cairo_create(surface));
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  return cr;
}

void write_png_atomic(cairo_t* cr,
                      cairo_surface_t* surface,
                      const std::string& png_path) {
  if (cairo_status(cr) != CAIRO_STATUS_SUCCESS) {
    throw IoError("cannot draw '" + png_path +
                  "': " + cairo_status_to_string(cairo_status(cr)));
  }
  cairo_surface_flush(surface);
  write_file_atomic(png_path, [&](const std::filesystem::path& tmp) {
    const cairo_status_t st = cairo_surface_write_to_png(surface, tmp.c_str());
    if (st != CAIRO_STATUS_SUCCESS) {
      throw IoError("cannot write '" + png_path +
                    "': " + cairo_status_to_string(st) +
                    " (is the folder writable and the disk not full?)");
    }
  });
}

void set_color(cairo_t* cr, const Rgb& c, double alpha) {
  cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
}

void set_font(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(
      cr, kFont, CAIRO_FONT_SLANT_NORMAL,
      bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  return e.x_advance;
}

void draw_text(
    cairo_t* cr, const std::string& s, double x, double y, Align h, Align v) {
  cairo_matrix_t m;
  cairo_get_font_matrix(cr, &m);
  const double cap = 0.73 * m.yy;  // DejaVu's cap height is 0.73 em
  const double w = text_width(cr, s);
  const double bx = h == Align::kStart    ? x
                    : h == Align::kCenter ? x - w / 2
                                          : x - w;
  const double by = v == Align::kStart    ? y + cap
                    : v == Align::kCenter ? y + cap / 2
                                          : y;
  cairo_move_to(cr, bx, by);
  cairo_show_text(cr, s.c_str());
}

void draw_text_vertical(cairo_t* cr, const std::string& s, double x, double y) {
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -kPi / 2);
  draw_text(cr, s, 0, 0, Align::kCenter, Align::kCenter);
  cairo_restore(cr);
}

std::string fit_text(cairo_t* cr, const std::string& s, double max_width) {
  if (text_width(cr, s) <= max_width) return s;
  const std::string ellipsis = "\xE2\x80\xA6";
  std::string t = s;
  while (!t.empty()) {
    size_t cut = t.size() - 1;
    while (cut > 0 && (static_cast<unsigned char>(t[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    t.erase(cut);
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (text_width(cr, t + ellipsis) <= max_width) return t + ellipsis;
  }
  return text_width(cr, ellipsis) <= max_width ? ellipsis : "";
}

double crisp(double v) {
  return std::floor(v) + 0.5;
}

}  // namespace detail

using namespace detail;

torch::Tensor render_text_page(const std::vector<std::string>& lines,
                               int width,
                               int height,
                               double font_size) {
  if (width < 8 || height < 8 || width > 8000 || height > 8000) {
    throw ConfigError("render_text_page: " + std::to_string(width) + "x" +
                      std::to_string(height) +
                      " px is outside 8..8000 px per side");
  }
  if (!(font_size > 0)) {
    throw ConfigError("render_text_page: font size must be positive");
  }
  Surface s(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height));
  if (cairo_surface_status(s.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError("render_text_page: cannot allocate a " +
                  std::to_string(width) + "x" + std::to_string(height) +
                  " px page");
  }
  {
    Context cr = new_context(s.get());
    cairo_set_source_rgb(cr.get(), 0, 0, 0);
    set_font(cr.get(), font_size);
    const double margin = font_size;
    const double step = 1.4 * font_size;
    double y = margin + font_size;
    for (const auto& line : lines) {
      if (y > height - margin / 2) break;
      cairo_move_to(cr.get(), margin, y);
      cairo_show_text(cr.get(), line.c_str());
      y += step;
    }
  }
  cairo_surface_flush(s.get());
  const unsigned char* data = cairo_image_surface_get_data(s.get());
  const int stride = cairo_image_surface_get_stride(s.get());
  torch::Tensor out = torch::empty({height, width}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  for (int r = 0; r < height; ++r) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + r * stride);
    for (int c = 0; c < width; ++c) {
      const uint32_t p = row[c];  // xRGB, native endian
      const double gray = 0.299 * ((p >> 16) & 0xff) +
                          0.587 * ((p >> 8) & 0xff) + 0.114 * (p & 0xff);
      o[r * width + c] = static_cast<float>(gray / 255.0);
    }
  }
  return out;
}

}  // namespace cxr::viz
