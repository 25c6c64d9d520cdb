// One image's explanation panel: the original beside the Grad-CAM maps of
// both classes, each overlaid on it, with the prediction and the true label
// in the captions. explain_run draws one per image; bench_explain times it.
#include "cxr/common/text.h"
#include "cxr/explain/explain.h"
#include "cxr/viz/plot.h"

namespace cxr::explain {

void save_panel(const torch::Tensor& gray,
                const torch::Tensor& positive_map,
                const torch::Tensor& negative_map,
                const PanelInfo& info,
                const std::string& png_path) {
  const bool pos = info.probability >= info.threshold;
  const std::string predicted = pos ? info.positive : info.negative;
  std::string truth = "true label unknown";
  std::string verdict;
  if (info.label >= 0) {
    truth = "true: " + (info.label == 1 ? info.positive : info.negative);
    verdict = (info.label == 1) == pos ? "correct" : "WRONG";
  }
  const std::string p =
      "P(" + info.positive + ") " + fixed(info.probability, 3, "nan");
  const std::string title =
      info.warning.empty() ? info.title : info.title + "  |  " + info.warning;
  std::vector<viz::Tile> tiles = {
      {gray, "original\npredicted " + predicted + ", " + p},
      {viz::overlay_heatmap(gray, positive_map),
       info.positive + " evidence\n" + truth},
      {viz::overlay_heatmap(gray, negative_map),
       info.negative + " evidence\n" + verdict}};
  viz::GridOptions g;
  g.title = title;
  g.columns = 3;
  g.tile_size = 240;
  g.colorbar = true;
  g.colorbar_label = "Grad-CAM (normalised)";
  viz::save_image_grid(tiles, g, png_path);
}

}  // namespace cxr::explain
