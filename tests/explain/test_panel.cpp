// save_panel (src/explain/panel.cpp): the original, the positive class's
// map and the negative class's map side by side, in that order.
#include <torch/torch.h>

#include "cxr/data/image_io.h"
#include "cxr/explain/explain.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;

/// Mean of R + G - 2B over columns [from, to) of the image: viridis' hot
/// end is yellow (high), its cold end purple (low); gray scores 0.
double yellowness(const torch::Tensor& rgb, int64_t from, int64_t to) {
  const auto cols = rgb.slice(2, from, to);
  return (cols[0] + cols[1] - 2 * cols[2]).mean().item<double>();
}

TEST(ExplainPanel, ThreeTilesOriginalThenPositiveThenNegativeMap) {
  TempDir tmp;
  const auto gray = torch::full({64, 64}, 0.5f);
  const auto hot = torch::ones({64, 64});
  const auto cold = torch::zeros({64, 64});
  cxr::explain::PanelInfo info;
  info.title = "image.png";
  info.probability = 0.9;
  const std::string a = (tmp / "positive_hot.png").string();
  const std::string b = (tmp / "negative_hot.png").string();
  cxr::explain::save_panel(gray, hot, cold, info, a);
  cxr::explain::save_panel(gray, cold, hot, info, b);
  const torch::Tensor pa = cxr::data::read_rgb(a);
  const torch::Tensor pb = cxr::data::read_rgb(b);
  ASSERT_EQ(pa.dim(), 3);
  ASSERT_EQ(pa.sizes(), pb.sizes());
  // Three 240 px tiles in one row (and a colour bar).
  const int64_t w = pa.size(2);
  EXPECT_GE(w, 3 * 240);
  EXPECT_LT(pa.size(1), w);
  // The middle tile shows the positive map: hot (yellow) in `a` only. The
  // first tile, the original, is gray in both.
  EXPECT_GT(yellowness(pa, w / 3, 2 * w / 3),
            yellowness(pb, w / 3, 2 * w / 3) + 0.2);
  EXPECT_NEAR(yellowness(pa, 0, w / 4), yellowness(pb, 0, w / 4), 1e-6);
}

}  // namespace
