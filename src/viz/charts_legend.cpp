// The legend of a line chart: layout, box and placement (charts.h).
#include "charts.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "canvas.h"

namespace cxr::viz::detail {
namespace {

// Points every few pixels along a pixel-space polyline; used to find the
// legend position that hides the least of the data.
void sample_polyline(const std::vector<Pt>& line, std::vector<Pt>* out) {
  if (line.size() == 1) out->push_back(line[0]);
  for (size_t i = 1; i < line.size(); ++i) {
    const double dx = line[i].x - line[i - 1].x;
    const double dy = line[i].y - line[i - 1].y;
    const int n = std::min(
        2000, 1 + static_cast<int>(std::sqrt(dx * dx + dy * dy) / 3.0));
    for (int k = 0; k <= n; ++k) {
      const double t = static_cast<double>(k) / n;
      out->push_back({line[i - 1].x + t * dx, line[i - 1].y + t * dy});
    }
  }
}

void rounded_rect(
    cairo_t* cr, double x, double y, double w, double h, double r) {
  cairo_new_sub_path(cr);
  cairo_arc(cr, x + w - r, y + r, r, -kPi / 2, 0);
  cairo_arc(cr, x + w - r, y + h - r, r, 0, kPi / 2);
  cairo_arc(cr, x + r, y + h - r, r, kPi / 2, kPi);
  cairo_arc(cr, x + r, y + r, r, kPi, 3 * kPi / 2);
  cairo_close_path(cr);
}

// `s` cut at spaces into lines no wider than `max_width`; a single word
// wider than that is shortened with an ellipsis.
std::vector<std::string> wrap_text(cairo_t* cr,
                                   const std::string& s,
                                   double max_width) {
  std::vector<std::string> lines;
  std::string cur;
  size_t i = 0;
  while (i < s.size()) {
    const size_t sp = s.find(' ', i);
    const std::string word =
        s.substr(i, sp == std::string::npos ? std::string::npos : sp - i);
    i = sp == std::string::npos ? s.size() : sp + 1;
    if (word.empty()) continue;
    const std::string joined = cur.empty() ? word : cur + " " + word;
    if (text_width(cr, joined) <= max_width || cur.empty()) {
      cur = joined;
    } else {
      lines.push_back(fit_text(cr, cur, max_width));
      cur = word;
    }
  }
  if (!cur.empty() || lines.empty())
    lines.push_back(fit_text(cr, cur, max_width));
  return lines;
}

}  // namespace

// The legend's lines: names shortened (inside the plot) or wrapped (below
// it) to `max_text` px.
LegendLayout legend_layout(cairo_t* cr,
                           const LineChart& chart,
                           double max_text) {
  LegendLayout l;
  set_font(cr, kLegendFont);
  max_text = std::max(40.0, max_text);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const std::string& name = chart.series[i].name;
    if (name.empty()) continue;
    const std::vector<std::string> parts =
        chart.legend == LineChart::Legend::kBelow
            ? wrap_text(cr, name, max_text)
            : std::vector<std::string>{fit_text(cr, name, max_text)};
    for (size_t k = 0; k < parts.size(); ++k) {
      l.lines.push_back({i, parts[k], k == 0});
      l.text_w = std::max(l.text_w, text_width(cr, parts[k]));
    }
  }
  return l;
}

// Room for the text of a legend below the plot: the chart's width.
double below_text_width(const LineChart& chart) {
  return chart.width - 2 * kChartPad - 2 * kLegendPad - kSwatch - kSwatchGap;
}

// Room for the text of a legend inside the plot (left..right).
double inside_text_width(double left, double right) {
  return right - left - 2 * kLegendMargin - 2 * kLegendPad - kSwatch -
         kSwatchGap;
}

void draw_legend_box(cairo_t* cr,
                     const LineChart& chart,
                     const LegendLayout& l,
                     Pt at) {
  rounded_rect(cr, crisp(at.x), crisp(at.y), std::round(l.box_w()),
               std::round(l.box_h()), 4);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
  cairo_fill_preserve(cr);
  set_color(cr, {0.8, 0.8, 0.8});
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  set_font(cr, kLegendFont);
  for (size_t k = 0; k < l.lines.size(); ++k) {
    const LegendLine& line = l.lines[k];
    const Series& s = chart.series[line.series];
    const double cy = at.y + kLegendPad + kLegendRow * k + 6;
    if (line.first) {
      set_color(cr, kPalette[line.series % std::size(kPalette)]);
      cairo_set_line_width(cr, 2.2);
      if (s.dashed) {
        const double dash[] = {6, 3};
        cairo_set_dash(cr, dash, 2, 0);
      }
      cairo_move_to(cr, at.x + kLegendPad, cy);
      cairo_line_to(cr, at.x + kLegendPad + kSwatch, cy);
      cairo_stroke(cr);
      cairo_set_dash(cr, nullptr, 0, 0);
    }
    set_color(cr, kText);
    draw_text(cr, line.text, at.x + kLegendPad + kSwatch + kSwatchGap, cy,
              Align::kStart, Align::kCenter);
  }
}

// Corners tried in order; the first with the fewest hits wins.
void draw_legend_inside(cairo_t* cr,
                        const LineChart& chart,
                        const std::vector<std::vector<Pt>>& pixel_lines,
                        const Frame& plot) {
  const auto [left, top, right, bottom] = plot;
  const LegendLayout l =
      legend_layout(cr, chart, inside_text_width(left, right));
  if (l.lines.empty()) return;
  const double box_w = l.box_w(), box_h = l.box_h(), margin = kLegendMargin;
  const std::array<Pt, 4> corners = {
      {{right - margin - box_w, top + margin},
       {left + margin, top + margin},
       {left + margin, bottom - margin - box_h},
       {right - margin - box_w, bottom - margin - box_h}}};
  std::vector<Pt> samples;
  for (const auto& line : pixel_lines) sample_polyline(line, &samples);
  Pt best = corners[0];
  size_t best_hits = std::numeric_limits<size_t>::max();
  for (const Pt& c : corners) {
    size_t hits = 0;
    for (const Pt& p : samples) {
      hits += p.x >= c.x - 3 && p.x <= c.x + box_w + 3 && p.y >= c.y - 3 &&
              p.y <= c.y + box_h + 3;
    }
    if (hits < best_hits) {
      best_hits = hits;
      best = c;
    }
  }
  draw_legend_box(cr, chart, l, best);
}

}  // namespace cxr::viz::detail
