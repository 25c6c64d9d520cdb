// The 2x2 confusion matrix figure: shaded cells with counts and row
// percentages, class names on both axes.
#include <cairo.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "canvas.h"
#include "cxr/common/error.h"
#include "cxr/viz/plot.h"

namespace cxr::viz {
namespace {

using namespace detail;

// Blues-like ramp for the confusion matrix: white to dark blue.
Rgb blues(double t) {
  constexpr Rgb stops[] = {{0.969, 0.984, 1.000},
                           {0.776, 0.859, 0.937},
                           {0.420, 0.682, 0.839},
                           {0.129, 0.443, 0.710},
                           {0.031, 0.188, 0.420}};
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  return {stops[i].r + f * (stops[i + 1].r - stops[i].r),
          stops[i].g + f * (stops[i + 1].g - stops[i].g),
          stops[i].b + f * (stops[i + 1].b - stops[i].b)};
}

void check_counts(const std::array<std::array<int64_t, 2>, 2>& m,
                  const std::string& png_path) {
  for (const auto& row : m) {
    for (int64_t v : row) {
      if (v < 0) {
        throw ConfigError("confusion matrix '" + png_path +
                          "': negative count " + std::to_string(v));
      }
    }
  }
}

// Where everything of the confusion matrix figure goes, in px.
struct ConfusionLayout {
  double cell = 150, pad = 16, name_font = 13, label_font = 13;
  std::array<std::string, 2> names;  // class names, shortened
  double title_w = 0;
  double grid_left = 0, grid_top = 0, grid_bottom = 0;
  int width = 0, height = 0;
};

// Measures the class names and title on a scratch surface to size the
// figure.
ConfusionLayout confusion_layout(const std::array<std::string, 2>& labels,
                                 const std::string& title,
                                 const std::string& png_path) {
  ConfusionLayout L;
  Surface scratch = new_surface(1, 1, png_path);
  Context measure = new_context(scratch.get());
  set_font(measure.get(), L.name_font);
  double name_w = 0;
  for (int i = 0; i < 2; ++i) {
    L.names[i] = fit_text(measure.get(), labels[i], 220);
    name_w = std::max(name_w, text_width(measure.get(), L.names[i]));
  }
  set_font(measure.get(), 15, true);
  L.title_w = text_width(measure.get(), title);

  L.grid_left = L.pad + L.label_font + 12 + name_w + 12;
  L.grid_top = L.pad + (title.empty() ? 0 : 32);
  const double grid_w = 2 * L.cell;
  L.width = static_cast<int>(std::ceil(
      std::max(L.grid_left + grid_w + L.pad + 8, L.title_w + 2 * L.pad)));
  L.grid_bottom = L.grid_top + 2 * L.cell;
  L.height = static_cast<int>(std::ceil(L.grid_bottom + 10 + L.name_font + 12 +
                                        L.label_font + 16 + 11 + L.pad));
  return L;
}

// The four cells: shade by row share, count, percentage and TN/FP/FN/TP.
void draw_confusion_cells(cairo_t* cr,
                          const std::array<std::array<int64_t, 2>, 2>& m,
                          const ConfusionLayout& L) {
  const double cell = L.cell;
  const char* kinds[2][2] = {{"TN", "FP"}, {"FN", "TP"}};
  for (int r = 0; r < 2; ++r) {
    const int64_t total = m[r][0] + m[r][1];
    for (int c = 0; c < 2; ++c) {
      const double x = L.grid_left + c * cell, y = L.grid_top + r * cell;
      const double frac =
          total > 0 ? static_cast<double>(m[r][c]) / total : -1.0;
      set_color(cr, frac >= 0 ? blues(frac) : Rgb{0.95, 0.95, 0.95});
      cairo_rectangle(cr, x + 1, y + 1, cell - 2, cell - 2);
      cairo_fill(cr);
      const Rgb bg = frac >= 0 ? blues(frac) : Rgb{1, 1, 1};
      const double luminance = 0.2126 * bg.r + 0.7152 * bg.g + 0.0722 * bg.b;
      const Rgb ink = luminance < 0.5 ? Rgb{1, 1, 1} : kText;
      set_color(cr, ink);
      set_font(cr, 28, true);
      draw_text(cr, std::to_string(m[r][c]), x + cell / 2, y + cell / 2 - 6,
                Align::kCenter, Align::kEnd);
      set_font(cr, 14);
      char pct[32];
      if (frac >= 0) {
        std::snprintf(pct, sizeof(pct), "%.1f%%", 100 * frac);
      } else {
        std::snprintf(pct, sizeof(pct), "n/a");
      }
      draw_text(cr, pct, x + cell / 2, y + cell / 2 + 10, Align::kCenter,
                Align::kStart);
      set_color(cr, ink, 0.7);
      set_font(cr, 10.5);
      draw_text(cr, kinds[r][c], x + 8, y + 8, Align::kStart, Align::kStart);
    }
  }
}

// Class names on both axes, "true" / "predicted", the note and the title.
void draw_confusion_labels(cairo_t* cr,
                           const ConfusionLayout& L,
                           const std::string& title) {
  const double cell = L.cell;
  set_color(cr, kText);
  set_font(cr, L.name_font);
  for (int i = 0; i < 2; ++i) {
    draw_text(cr, L.names[i], L.grid_left - 12, L.grid_top + (i + 0.5) * cell,
              Align::kEnd, Align::kCenter);
    draw_text(cr, fit_text(cr, L.names[i], cell - 8),
              L.grid_left + (i + 0.5) * cell, L.grid_bottom + 10,
              Align::kCenter, Align::kStart);
  }
  set_font(cr, L.label_font, true);
  draw_text_vertical(cr, "true", L.pad + L.label_font / 2, L.grid_top + cell);
  const double predicted_y = L.grid_bottom + 10 + L.name_font + 12;
  draw_text(cr, "predicted", L.grid_left + cell, predicted_y, Align::kCenter,
            Align::kStart);
  set_font(cr, 10.5);
  set_color(cr, kMuted);
  draw_text(cr, "percentages are shares of each true-class row",
            L.grid_left + cell, predicted_y + L.label_font + 16, Align::kCenter,
            Align::kStart);
  if (!title.empty()) {
    // Centred over the cells when it fits there, else over the figure.
    const double cx = std::clamp(L.grid_left + cell, L.pad + L.title_w / 2,
                                 L.width - L.pad - L.title_w / 2);
    set_color(cr, kText);
    set_font(cr, 15, true);
    draw_text(cr, title, cx, L.pad, Align::kCenter, Align::kStart);
  }
}

}  // namespace

void save_confusion_matrix(const std::array<std::array<int64_t, 2>, 2>& m,
                           const std::array<std::string, 2>& labels,
                           const std::string& title,
                           const std::string& png_path) {
  check_counts(m, png_path);
  const ConfusionLayout L = confusion_layout(labels, title, png_path);
  Surface surface = new_surface(L.width, L.height, png_path);
  Context ctx = new_context(surface.get());
  draw_confusion_cells(ctx.get(), m, L);
  draw_confusion_labels(ctx.get(), L, title);
  write_png_atomic(ctx.get(), surface.get(), png_path);
}

}  // namespace cxr::viz
