#pragma once
// Internal to src/viz: the cairo canvas, text layout and axis helpers that
// the chart (charts.cpp), image-grid (images.cpp) and axis (axis.cpp) files
// share. Not installed; include/cxr/viz/plot.h is the public interface.
#include <cairo.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cxr::viz::detail {

inline constexpr double kPi = 3.14159265358979323846;

struct Rgb {
  double r, g, b;
};

// matplotlib's default "tab10" palette, so figures look familiar.
inline constexpr Rgb kPalette[] = {
    {0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173},
    {0.839, 0.153, 0.157}, {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
    {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498}, {0.737, 0.741, 0.133},
    {0.090, 0.745, 0.812}};
inline constexpr Rgb kText = {0.13, 0.13, 0.13};
inline constexpr Rgb kMuted = {0.42, 0.42, 0.42};
inline constexpr Rgb kGrid = {0.91, 0.91, 0.91};
inline constexpr Rgb kFrame = {0.55, 0.55, 0.55};

struct SurfaceDeleter {
  void operator()(cairo_surface_t* s) const { cairo_surface_destroy(s); }
};
struct ContextDeleter {
  void operator()(cairo_t* c) const { cairo_destroy(c); }
};
using Surface = std::unique_ptr<cairo_surface_t, SurfaceDeleter>;
using Context = std::unique_ptr<cairo_t, ContextDeleter>;

// ---- canvas (canvas.cpp)

/// An ARGB32 surface; ConfigError past cairo's size limit, IoError when it
/// cannot be allocated (both name `png_path`).
Surface new_surface(int width, int height, const std::string& png_path);
/// A context on `surface`, painted white.
Context new_context(cairo_surface_t* surface);
/// Writes `surface` to `png_path` atomically; IoError naming the path.
void write_png_atomic(cairo_t* cr,
                      cairo_surface_t* surface,
                      const std::string& png_path);

void set_color(cairo_t* cr, const Rgb& c, double alpha = 1.0);
void set_font(cairo_t* cr, double size, bool bold = false);
double text_width(cairo_t* cr, const std::string& s);

enum class Align { kStart, kCenter, kEnd };

/// Draws one line with (x, y) as anchor. Vertically kStart is the top of the
/// capitals, kCenter their middle and kEnd the baseline, so labels line up
/// the same whatever letters they contain.
void draw_text(
    cairo_t* cr, const std::string& s, double x, double y, Align h, Align v);
/// Text reading bottom to top, centred on (x, y).
void draw_text_vertical(cairo_t* cr, const std::string& s, double x, double y);
/// Shortens `s` with an ellipsis until it fits `max_width`, cutting whole
/// UTF-8 code points.
std::string fit_text(cairo_t* cr, const std::string& s, double max_width);
/// Snaps a coordinate to a pixel centre so 1 px lines stay sharp.
double crisp(double v);

// ---- axes (axis.cpp)

/// Tick label with as many decimals as the step needs ("0.25", "10",
/// "1e+07").
std::string format_tick(double v, double step);

struct Axis {
  double lo = 0, hi = 1;
  double step = 0.2;
  std::vector<double> ticks;
};

/// What an axis is made from. A range with data_lo > data_hi means no
/// data.
struct AxisSpec {
  double data_lo = 1, data_hi = 0;  ///< extent of the finite data
  std::optional<double> min, max;   ///< explicit limits
  int max_ticks = 7;
  bool integer = false;  ///< whole-number steps only (epochs)
};

/// One axis: explicit limits win; free sides follow the finite data and are
/// widened when the data are constant. `what` names the figure in errors.
Axis make_axis(const AxisSpec& spec, const std::string& what);

}  // namespace cxr::viz::detail
