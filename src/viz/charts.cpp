// Line charts (curves, ROC, histograms as steps): the layout of one chart
// and its axes, ticks, grid, series and titles (charts.h).
#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "canvas.h"
#include "charts.h"
#include "cxr/common/error.h"
#include "cxr/viz/plot.h"

namespace cxr::viz::detail {
namespace {

// The drawable pieces of a series: runs of finite points (a NaN breaks the
// line), with the corners of a step function inserted.
std::vector<std::vector<Pt>> polylines(const Series& s) {
  std::vector<std::vector<Pt>> out;
  std::vector<Pt> cur;
  for (size_t i = 0; i < s.x.size(); ++i) {
    if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
      if (s.steps && !cur.empty()) cur.push_back({s.x[i], cur.back().y});
      cur.push_back({s.x[i], s.y[i]});
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

constexpr double kTickFont = 11, kLabelFont = 12.5;

// ---- line chart, step by step

// The finite data's extent, and whether all values are whole numbers.
struct DataRange {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  bool x_integer = true, y_integer = true;
  bool has_data() const { return x_lo <= x_hi; }
};

DataRange data_range(const LineChart& chart, const std::string& what) {
  DataRange d;
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      throw ConfigError(what + ": series '" + s.name + "' has " +
                        std::to_string(s.x.size()) + " x values but " +
                        std::to_string(s.y.size()) + " y values");
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      d.x_lo = std::min(d.x_lo, s.x[i]);
      d.x_hi = std::max(d.x_hi, s.x[i]);
      d.y_lo = std::min(d.y_lo, s.y[i]);
      d.y_hi = std::max(d.y_hi, s.y[i]);
      d.x_integer = d.x_integer && s.x[i] == std::round(s.x[i]);
      d.y_integer = d.y_integer && s.y[i] == std::round(s.y[i]);
    }
  }
  return d;
}

// The plot area (frame) of a chart in figure pixels and its two axes.
struct PlotArea : Frame {
  Axis xa, ya;
  // Where the axis limits land: explicit limits map to a few pixels inside
  // the frame, so curves along them (ROC curves at 0 and 1) are not hidden
  // by it; free sides already have a margin.
  double dl = 0, dr = 0, dt = 0, db = 0;
  double px(double x) const {
    return dl + (x - xa.lo) / (xa.hi - xa.lo) * (dr - dl);
  }
  double py(double y) const {
    return db - (y - ya.lo) / (ya.hi - ya.lo) * (db - dt);
  }
};

// The x axis with as many ticks as fit: fewer until the widest label
// leaves 12 px to its neighbours.
Axis fit_x_axis(cairo_t* cr,
                const LineChart& chart,
                const DataRange& d,
                const PlotArea& a,
                const std::string& what) {
  const double left = a.left, right = a.right;
  int x_ticks = std::clamp(static_cast<int>((right - left) / 65), 3, 10);
  Axis xa;
  for (;;) {
    xa = make_axis(
        {d.x_lo, d.x_hi, chart.x_min, chart.x_max, x_ticks, d.x_integer}, what);
    double widest = 0;
    for (double t : xa.ticks) {
      widest = std::max(widest, text_width(cr, format_tick(t, xa.step)));
    }
    const double spacing = xa.step / (xa.hi - xa.lo) * (right - left);
    if (widest + 12 <= spacing || x_ticks <= 2) break;
    --x_ticks;
  }
  return xa;
}

// Places the plot area in the box (ox, oy, chart.width, chart.height),
// leaving room for the title, the axis labels, the tick labels and
// `legend_h` px of legend below it.
PlotArea layout_plot(cairo_t* cr,
                     const LineChart& chart,
                     const DataRange& d,
                     Pt origin,
                     double legend_h,
                     const std::string& what) {
  const double ox = origin.x, oy = origin.y;
  const double w = chart.width, h = chart.height;
  PlotArea a;
  a.top = oy + kChartPad + (chart.title.empty() ? 4 : 28);
  a.bottom = oy + h - kChartPad - 20 -
             (chart.x_label.empty() ? 0 : kLabelFont + 9) -
             (legend_h > 0 ? legend_h + 6 : 0);
  const int y_ticks =
      std::clamp(static_cast<int>((a.bottom - a.top) / 38), 3, 9);
  a.ya = make_axis(
      {d.y_lo, d.y_hi, chart.y_min, chart.y_max, y_ticks, d.y_integer}, what);
  set_font(cr, kTickFont);
  double y_tick_w = 0;
  for (double t : a.ya.ticks) {
    y_tick_w = std::max(y_tick_w, text_width(cr, format_tick(t, a.ya.step)));
  }
  a.left = ox + kChartPad + (chart.y_label.empty() ? 0 : kLabelFont + 9) +
           y_tick_w + 9;
  a.right = ox + w - kChartPad - 4;
  a.xa = fit_x_axis(cr, chart, d, a, what);
  if (!a.xa.ticks.empty()) {
    // The last x label is centred on its tick; keep it inside the figure.
    const double half =
        text_width(cr, format_tick(a.xa.ticks.back(), a.xa.step)) / 2;
    a.right = std::min(a.right, ox + w - 4 - half);
  }
  if (a.right - a.left < 40 || a.bottom - a.top < 40) {
    throw ConfigError(what + ": " + std::to_string(chart.width) + "x" +
                      std::to_string(chart.height) +
                      " px leaves no room for the plot; make it larger");
  }
  const double inset = 6;
  a.dl = a.left + (chart.x_min ? inset : 0);
  a.dr = a.right - (chart.x_max ? inset : 0);
  a.dt = a.top + (chart.y_max ? inset : 0);
  a.db = a.bottom - (chart.y_min ? inset : 0);
  return a;
}

void draw_grid(cairo_t* cr, const PlotArea& a) {
  cairo_set_line_width(cr, 1);
  set_color(cr, kGrid);
  for (double t : a.xa.ticks) {
    cairo_move_to(cr, crisp(a.px(t)), a.top);
    cairo_line_to(cr, crisp(a.px(t)), a.bottom);
  }
  for (double t : a.ya.ticks) {
    cairo_move_to(cr, a.left, crisp(a.py(t)));
    cairo_line_to(cr, a.right, crisp(a.py(t)));
  }
  cairo_stroke(cr);
}

// The dashed y = x diagonal and the dotted vertical markers.
void draw_guides(cairo_t* cr,
                 const LineChart& chart,
                 const PlotArea& a,
                 std::vector<std::vector<Pt>>* pixel_lines) {
  if (chart.diagonal) {
    const double lo = std::max(a.xa.lo, a.ya.lo);
    const double hi = std::min(a.xa.hi, a.ya.hi);
    if (lo < hi) {
      const double dash[] = {5, 4};
      cairo_set_dash(cr, dash, 2, 0);
      cairo_set_line_width(cr, 1.2);
      set_color(cr, {0.62, 0.62, 0.62});
      cairo_move_to(cr, a.px(lo), a.py(lo));
      cairo_line_to(cr, a.px(hi), a.py(hi));
      cairo_stroke(cr);
      pixel_lines->push_back({{a.px(lo), a.py(lo)}, {a.px(hi), a.py(hi)}});
    }
  }
  for (double m : chart.x_markers) {
    if (!std::isfinite(m) || m < a.xa.lo || m > a.xa.hi) continue;
    const double dash[] = {2, 3};
    cairo_set_dash(cr, dash, 2, 0);
    cairo_set_line_width(cr, 1.2);
    set_color(cr, {0.35, 0.35, 0.35});
    cairo_move_to(cr, crisp(a.px(m)), a.top);
    cairo_line_to(cr, crisp(a.px(m)), a.bottom);
    cairo_stroke(cr);
  }
}

// Each series in its palette colour; appends the drawn pixel-space lines
// for the legend placement.
void draw_series(cairo_t* cr,
                 const LineChart& chart,
                 const PlotArea& a,
                 std::vector<std::vector<Pt>>* pixel_lines) {
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    set_color(cr, kPalette[i % std::size(kPalette)]);
    if (s.dashed) {
      const double dash[] = {7, 4};
      cairo_set_dash(cr, dash, 2, 0);
    } else {
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    cairo_set_line_width(cr, 2);
    for (const auto& line : polylines(s)) {
      std::vector<Pt> pl;
      for (const Pt& p : line) pl.push_back({a.px(p.x), a.py(p.y)});
      if (pl.size() == 1) {
        // A point between two NaNs would otherwise be invisible.
        cairo_arc(cr, pl[0].x, pl[0].y, 2.6, 0, 2 * kPi);
        cairo_fill(cr);
      } else {
        cairo_move_to(cr, pl[0].x, pl[0].y);
        for (size_t k = 1; k < pl.size(); ++k) {
          cairo_line_to(cr, pl[k].x, pl[k].y);
        }
        cairo_stroke(cr);
      }
      pixel_lines->push_back(std::move(pl));
    }
  }
  cairo_set_dash(cr, nullptr, 0, 0);
}

// Guides and series, clipped to the plot area; returns their pixel lines.
std::vector<std::vector<Pt>> draw_data(cairo_t* cr,
                                       const LineChart& chart,
                                       const PlotArea& a) {
  std::vector<std::vector<Pt>> pixel_lines;
  cairo_save(cr);
  cairo_rectangle(cr, a.left, a.top, a.right - a.left, a.bottom - a.top);
  cairo_clip(cr);
  draw_guides(cr, chart, a, &pixel_lines);
  draw_series(cr, chart, a, &pixel_lines);
  cairo_restore(cr);
  return pixel_lines;
}

// The frame, tick marks and tick labels.
void draw_axes(cairo_t* cr, const PlotArea& a) {
  cairo_set_line_width(cr, 1);
  set_color(cr, kFrame);
  cairo_rectangle(cr, crisp(a.left), crisp(a.top),
                  std::round(a.right) - std::round(a.left),
                  std::round(a.bottom) - std::round(a.top));
  for (double t : a.xa.ticks) {
    cairo_move_to(cr, crisp(a.px(t)), crisp(a.bottom));
    cairo_line_to(cr, crisp(a.px(t)), crisp(a.bottom) + 4);
  }
  for (double t : a.ya.ticks) {
    cairo_move_to(cr, crisp(a.left), crisp(a.py(t)));
    cairo_line_to(cr, crisp(a.left) - 4, crisp(a.py(t)));
  }
  cairo_stroke(cr);

  set_font(cr, kTickFont);
  set_color(cr, kText);
  for (double t : a.xa.ticks) {
    draw_text(cr, format_tick(t, a.xa.step), a.px(t), a.bottom + 8,
              Align::kCenter, Align::kStart);
  }
  for (double t : a.ya.ticks) {
    draw_text(cr, format_tick(t, a.ya.step), a.left - 7, a.py(t), Align::kEnd,
              Align::kCenter);
  }
}

// Axis labels and the title, shortened to fit.
void draw_titles(cairo_t* cr,
                 const LineChart& chart,
                 const PlotArea& a,
                 double ox,
                 double oy) {
  set_font(cr, kLabelFont);
  if (!chart.x_label.empty()) {
    draw_text(cr, fit_text(cr, chart.x_label, a.right - a.left),
              (a.left + a.right) / 2, a.bottom + 8 + kTickFont + 10,
              Align::kCenter, Align::kStart);
  }
  if (!chart.y_label.empty()) {
    draw_text_vertical(cr, fit_text(cr, chart.y_label, a.bottom - a.top),
                       ox + kChartPad + kLabelFont / 2, (a.top + a.bottom) / 2);
  }
  if (!chart.title.empty()) {
    set_font(cr, 14.5, true);
    draw_text(cr, fit_text(cr, chart.title, chart.width - 2 * kChartPad),
              (a.left + a.right) / 2, oy + kChartPad, Align::kCenter,
              Align::kStart);
  }
}

// A legend below the plot (empty for one inside it).
LegendLayout below_legend(cairo_t* cr, const LineChart& chart) {
  if (chart.legend != LineChart::Legend::kBelow) return {};
  return legend_layout(cr, chart, below_text_width(chart));
}

}  // namespace

std::string checked_name(const LineChart& chart, const std::string& path) {
  const std::string what =
      "line chart '" + (chart.title.empty() ? path : chart.title) + "'";
  if (chart.width < 160 || chart.width > 8000 || chart.height < 160 ||
      chart.height > 8000) {
    throw ConfigError(what + ": size " + std::to_string(chart.width) + "x" +
                      std::to_string(chart.height) +
                      " px is outside 160..8000 px per side");
  }
  return what;
}

void draw_line_chart(cairo_t* cr,
                     const LineChart& chart,
                     double ox,
                     double oy,
                     const std::string& png_path) {
  const std::string what = checked_name(chart, png_path);
  const DataRange d = data_range(chart, what);
  const LegendLayout below = below_legend(cr, chart);
  const PlotArea a = layout_plot(cr, chart, d, {ox, oy}, below.box_h(), what);
  draw_grid(cr, a);
  const std::vector<std::vector<Pt>> pixel_lines = draw_data(cr, chart, a);
  if (!d.has_data()) {
    set_font(cr, 13);
    set_color(cr, kMuted);
    draw_text(cr, "no data", (a.left + a.right) / 2, (a.top + a.bottom) / 2,
              Align::kCenter, Align::kCenter);
  }
  draw_axes(cr, a);
  draw_titles(cr, chart, a, ox, oy);
  if (chart.legend == LineChart::Legend::kBelow) {
    if (!below.lines.empty()) {
      // Under the x label, aligned with the plot while it fits.
      const double x =
          std::min(a.left, ox + chart.width - kChartPad - below.box_w());
      draw_legend_box(cr, chart, below,
                      {std::max(ox + kChartPad / 2, x),
                       oy + chart.height - kChartPad / 2 - below.box_h()});
    }
  } else {
    draw_legend_inside(cr, chart, pixel_lines, a);
  }
}

}  // namespace cxr::viz::detail

namespace cxr::viz {

using namespace detail;

std::vector<std::string> legend_lines(const LineChart& chart) {
  const std::string what = checked_name(chart, "(legend)");
  Surface surface = new_surface(1, 1, "(legend)");
  Context cr = new_context(surface.get());
  LegendLayout l = below_legend(cr.get(), chart);
  if (chart.legend != LineChart::Legend::kBelow) {
    const PlotArea a =
        layout_plot(cr.get(), chart, data_range(chart, what), {0, 0}, 0, what);
    l = legend_layout(cr.get(), chart, inside_text_width(a.left, a.right));
  }
  std::vector<std::string> out;
  for (const LegendLine& line : l.lines) out.push_back(line.text);
  return out;
}

}  // namespace cxr::viz
