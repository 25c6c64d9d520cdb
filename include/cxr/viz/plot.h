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
  bool steps = false;  ///< draw as a step function (histograms)
};

struct LineChart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Series> series;
  std::optional<double> x_min, x_max, y_min, y_max;  ///< default: data range
  bool diagonal = false;           ///< draw y = x (ROC curves)
  std::vector<double> x_markers;   ///< vertical dotted lines (e.g. best epoch)
  int width = 720;
  int height = 460;
};

/// Draws a line chart with axes, ticks, grid and a legend. Atomic write;
/// throws IoError naming the path.
void save_line_chart(const LineChart& chart, const std::string& png_path);

/// Several charts side by side in one PNG (e.g. loss | accuracy).
void save_line_charts(const std::vector<LineChart>& charts,
                      const std::string& png_path);

/// A 2x2 confusion matrix with counts and row percentages.
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
  int tile_size = 160;        ///< displayed side length of each tile, px
  bool colorbar = false;      ///< add a colour bar of the colour map on the right
  std::string colorbar_label; ///< e.g. "Grad-CAM (normalised)"
};

/// Draws tiles in a grid with captions under each tile.
void save_image_grid(const std::vector<Tile>& tiles, const GridOptions& options,
                     const std::string& png_path);

/// Perceptually ordered colour map (viridis): [H, W] in [0,1] -> [3, H, W].
torch::Tensor colormap_viridis(const torch::Tensor& values);

/// Alpha-blends a heat map (values [H, W] in [0,1]) over a gray image
/// ([H, W] in [0,1]). Returns [3, H, W] in [0,1]. `alpha` in [0,1].
torch::Tensor overlay_heatmap(const torch::Tensor& gray,
                              const torch::Tensor& heat, double alpha = 0.45);

}  // namespace cxr::viz
