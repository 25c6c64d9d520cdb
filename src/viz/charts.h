#pragma once
// Internal to src/viz: the pieces of a line chart that its three files
// share: charts.cpp lays out and draws one chart, charts_legend.cpp its
// legend (lines shortened or wrapped, the box, the corner inside the plot
// that hides the least data), charts_files.cpp writes charts as PNG or SVG.
// Not installed; include/cxr/viz/plot.h is the public interface.
#include <cairo.h>

#include <string>
#include <vector>

#include "cxr/viz/plot.h"

namespace cxr::viz::detail {

// ---- legend (charts_legend.cpp)

// A point in data or pixel space.
struct Pt {
  double x, y;
};

// Padding around a chart inside its box (figure pixels).
inline constexpr double kChartPad = 14;

inline constexpr double kLegendFont = 11.5, kLegendPad = 8, kLegendRow = 18,
                        kSwatch = 26, kSwatchGap = 7, kLegendMargin = 8;

// One line of the legend: the series it belongs to (a wrapped name gives
// several lines; only the first has the line sample).
struct LegendLine {
  size_t series = 0;
  std::string text;
  bool first = true;
};

struct LegendLayout {
  std::vector<LegendLine> lines;
  double text_w = 0;
  double box_w() const {
    return kLegendPad + kSwatch + kSwatchGap + text_w + kLegendPad;
  }
  double box_h() const {
    return lines.empty() ? 0 : 2 * kLegendPad + lines.size() * kLegendRow - 6;
  }
};

// The legend's lines: names shortened (inside the plot) or wrapped (below
// it) to `max_text` px.
LegendLayout legend_layout(cairo_t* cr,
                           const LineChart& chart,
                           double max_text);

// Room for the text of a legend below the plot: the chart's width.
double below_text_width(const LineChart& chart);

// Room for the text of a legend inside the plot (left..right).
double inside_text_width(double left, double right);

// The legend box with its top-left corner at `at`.
void draw_legend_box(cairo_t* cr,
                     const LineChart& chart,
                     const LegendLayout& l,
                     Pt at);

// The frame of a plot area, in figure pixels.
struct Frame {
  double left = 0, top = 0, right = 0, bottom = 0;
};

// A legend inside `plot`, in matplotlib's "best" corner: fewest covered
// data samples (of `pixel_lines`, the drawn series in pixels), corners in
// the order upper right, upper left, lower left, lower right.
void draw_legend_inside(cairo_t* cr,
                        const LineChart& chart,
                        const std::vector<std::vector<Pt>>& pixel_lines,
                        const Frame& plot);

// ---- one chart (charts.cpp)

// How a chart is named in errors; throws ConfigError for a size outside
// 160..8000 px.
std::string checked_name(const LineChart& chart, const std::string& path);

// Draws `chart` into the box (ox, oy, chart.width, chart.height) of `cr`;
// errors name `png_path`.
void draw_line_chart(cairo_t* cr,
                     const LineChart& chart,
                     double ox,
                     double oy,
                     const std::string& png_path);

}  // namespace cxr::viz::detail
