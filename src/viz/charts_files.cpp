// Line charts written out: PNG files (several charts side by side) and SVG
// documents (for the HTML report).
#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>

#include "canvas.h"
#include "charts.h"
#include "cxr/common/error.h"
#include "cxr/viz/plot.h"

namespace cxr::viz {
namespace {

using namespace detail;

cairo_status_t append_to_string(void* closure,
                                const unsigned char* data,
                                unsigned int length) {
  static_cast<std::string*>(closure)->append(
      reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

}  // namespace

void save_line_chart(const LineChart& chart, const std::string& png_path) {
  save_line_charts({chart}, png_path);
}

void save_line_charts(const std::vector<LineChart>& charts,
                      const std::string& png_path) {
  if (charts.empty()) {
    throw ConfigError("figure '" + png_path + "': no charts to draw");
  }
  int width = 0, height = 0;
  for (const LineChart& c : charts) {
    width += std::max(c.width, 0);
    height = std::max(height, c.height);
  }
  Surface surface = new_surface(width, height, png_path);
  Context cr = new_context(surface.get());
  double x = 0;
  for (const LineChart& c : charts) {
    draw_line_chart(cr.get(), c, x, 0, png_path);
    x += c.width;
  }
  write_png_atomic(cr.get(), surface.get(), png_path);
}

std::string line_chart_svg(const LineChart& chart) {
  const std::string what = checked_name(chart, "(svg)");
  std::string out;
  Surface surface(cairo_svg_surface_create_for_stream(
      append_to_string, &out, chart.width, chart.height));
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError(what + ": cannot make an SVG surface: " +
                  cairo_status_to_string(cairo_surface_status(surface.get())));
  }
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 15, 10)
  // Without it cairo writes pt, and browsers draw the chart a third larger.
  cairo_svg_surface_set_document_unit(surface.get(), CAIRO_SVG_UNIT_PX);
#endif
  {
    Context cr = new_context(surface.get());
    draw_line_chart(cr.get(), chart, 0, 0, "(svg)");
    if (cairo_status(cr.get()) != CAIRO_STATUS_SUCCESS) {
      throw IoError(what + ": cannot draw: " +
                    cairo_status_to_string(cairo_status(cr.get())));
    }
  }
  cairo_surface_finish(surface.get());
  if (cairo_surface_status(surface.get()) != CAIRO_STATUS_SUCCESS) {
    throw IoError(what + ": cannot write the SVG: " +
                  cairo_status_to_string(cairo_surface_status(surface.get())));
  }
  return out;
}

}  // namespace cxr::viz
