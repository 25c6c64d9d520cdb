#pragma once
/// Figures as PNG files, drawn with cairo (text, axes, legends). Pure
/// drawing: this module knows nothing about datasets or models.
#include <torch/torch.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace cxr::viz {

struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
  bool dashed = false;
  bool steps = false;  ///< draw as a step function (histograms):
                       ///< y[i] holds from x[i] to x[i + 1]
};

struct LineChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Series> series;
  std::optional<double> x_min, x_max, y_min, y_max;  ///< default: data range
  bool diagonal = false;          ///< draw y = x (ROC curves)
  std::vector<double> x_markers;  ///< vertical dotted lines (e.g. best epoch)
  int width = 720;
  int height = 460;
  /// Where the legend goes. kInside: the plot corner that hides the least
  /// data, names shortened with an ellipsis to fit the plot's width.
  /// kBelow: under the plot, each name wrapped over as many lines as it
  /// needs within the chart's width (the plot gets shorter), so long names
  /// such as a study's model names with their AUC are shown whole.
  enum class Legend { kInside, kBelow };
  Legend legend = Legend::kInside;
};

/// Draws a line chart with axes, ticks, grid and a legend. Atomic write;
/// throws IoError naming the path. Non-finite points are skipped and break
/// the line; the legend goes into the plot corner that hides the least data.
/// Throws ConfigError when a series has different x and y lengths, when the
/// size is outside [160, 8000] px or when an explicit min is not below max.
void save_line_chart(const LineChart& chart, const std::string& png_path);

/// Several charts side by side in one PNG (e.g. loss | accuracy).
void save_line_charts(const std::vector<LineChart>& charts,
                      const std::string& png_path);

/// The same chart as an SVG document (text drawn as outlines, so it needs
/// no fonts where it is shown; sizes in px): for HTML pages that should stay
/// sharp when zoomed or printed. Same checks and errors as save_line_chart.
std::string line_chart_svg(const LineChart& chart);

/// The legend's lines as the chart draws them (names shortened or wrapped
/// to the room they get; a wrapped name gives several lines), for checks
/// that a legend shows what it should. Same checks as save_line_chart.
std::vector<std::string> legend_lines(const LineChart& chart);

/// A 2x2 confusion matrix with counts and row percentages; cells are shaded
/// by their share of the row. ConfigError for negative counts.
/// m[true][pred], index 1 = positive class. labels = {negative, positive}.
void save_confusion_matrix(const std::array<std::array<int64_t, 2>, 2>& m,
                           const std::array<std::string, 2>& labels,
                           const std::string& title,
                           const std::string& png_path);

/// One tile of an image grid: [H, W] gray or [3, H, W] RGB, float in [0,1].
struct Tile {
  torch::Tensor image;
  std::string caption;  ///< may contain '\n' for two lines
};

struct GridOptions {
  std::string title;
  int columns = 8;
  int tile_size = 160;    ///< displayed side length of each tile, px
  bool colorbar = false;  ///< add a colour bar of the colour map on the right
  std::string colorbar_label;  ///< e.g. "Grad-CAM (normalised)"
};

/// Draws tiles in a grid with captions under each tile (up to two lines,
/// shortened with an ellipsis when wider than the tile). Tiles keep their
/// aspect ratio; values outside [0, 1] are clipped and NaN shows as black.
/// ConfigError for no tiles, a tile of the wrong shape or bad options.
void save_image_grid(const std::vector<Tile>& tiles,
                     const GridOptions& options,
                     const std::string& png_path);

/// Perceptually ordered colour map (viridis): [H, W] in [0,1] -> [3, H, W].
/// Uses matplotlib's 256-entry table with linear interpolation, computed on
/// the tensor's device; any shape S gives [3, S...] float32. Values outside
/// [0, 1] are clipped, NaN maps to 0.
torch::Tensor colormap_viridis(const torch::Tensor& values);

/// Alpha-blends a heat map (values [H, W] in [0,1]) over a gray image
/// ([H, W] in [0,1]). Returns [3, H, W] in [0,1]. `alpha` in [0,1].
/// [1, H, W] inputs are accepted too; the result is on gray's device.
/// Throws ConfigError naming the problem for mismatched sizes, values
/// outside [0, 1] (or NaN) and a bad alpha.
torch::Tensor overlay_heatmap(const torch::Tensor& gray,
                              const torch::Tensor& heat,
                              double alpha = 0.45);

/// Renders lines of black text on a white page (DejaVu Sans, `font_size`
/// px, left margin and line spacing of about one em; lines that do not fit
/// are cut off). Returns [height, width] float32 in [0, 1] (1 = white).
/// Used to make "text page" inputs that an X-ray model must not score.
/// ConfigError for a size outside [8, 8000] px or a font size <= 0.
torch::Tensor render_text_page(const std::vector<std::string>& lines,
                               int width,
                               int height,
                               double font_size = 12.0);

/// "Nice" tick values (multiples of 1, 2, 2.5 or 5 times a power of ten)
/// inside [lo, hi] (give or take 1e-9 of a step), at most `max_ticks` of
/// them and at least 2 when max_ticks >= 3. Empty for a non-finite or
/// inverted range, {lo} when lo == hi.
std::vector<double> nice_ticks(double lo, double hi, int max_ticks = 7);

}  // namespace cxr::viz
