// Figures: every writer produces a decodable PNG of the expected size with
// the expected colours; the colour map and overlay follow their contracts.
// Set CXR_TEST_PLOT_DIR to keep the PNGs for looking at them.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "cxr/viz/plot.h"
#include "test_util.h"

namespace cxr::viz {
namespace {

using cxr::testing::TempDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

class PlotTest : public ::testing::Test {
 protected:
  std::string out(const std::string& name) const {
    if (const char* keep = std::getenv("CXR_TEST_PLOT_DIR")) {
      std::filesystem::create_directories(keep);
      return (std::filesystem::path(keep) / name).string();
    }
    return (tmp_ / name).string();
  }

  // Decodes the PNG after checking its signature.
  static torch::Tensor read_png(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::string sig(8, '\0');
    in.read(sig.data(), 8);
    EXPECT_EQ(sig, std::string("\x89PNG\r\n\x1a\n", 8)) << path;
    return cxr::data::read_rgb(path);
  }

  // Pixels within `tol` of an sRGB colour given in 0..255.
  static int64_t count_colour(
      const torch::Tensor& img, int r, int g, int b, double tol = 0.06) {
    const auto target =
        torch::tensor({r / 255.0f, g / 255.0f, b / 255.0f}).view({3, 1, 1});
    return ((img - target).abs().amax(0) <= tol).sum().item<int64_t>();
  }

  TempDir tmp_;
};

constexpr int kBlue[] = {31, 119, 180};    // first series (tab10)
constexpr int kOrange[] = {255, 127, 14};  // second series

LineChart loss_chart() {
  LineChart c;
  c.title = "Training loss";
  c.x_label = "epoch";
  c.y_label = "cross-entropy loss";
  Series train{"train", {}, {}};
  Series val{"validation", {}, {}, true};
  for (int e = 1; e <= 30; ++e) {
    train.x.push_back(e);
    train.y.push_back(0.7 * std::exp(-e / 8.0) + 0.05);
    val.x.push_back(e);
    val.y.push_back(0.7 * std::exp(-e / 10.0) + 0.12 + 0.002 * e);
  }
  c.series = {train, val};
  c.x_markers = {17};
  return c;
}

TEST_F(PlotTest, LineChartWritesPngWithBothSeries) {
  const std::string path = out("line_loss.png");
  save_line_chart(loss_chart(), path);
  const torch::Tensor img = read_png(path);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 460, 720}));
  EXPECT_GT(count_colour(img, kBlue[0], kBlue[1], kBlue[2]), 300);
  EXPECT_GT(count_colour(img, kOrange[0], kOrange[1], kOrange[2]), 200);
  // Mostly white background, dark text present.
  EXPECT_GT(count_colour(img, 255, 255, 255, 0.01), 720 * 460 / 2);
  EXPECT_GT(count_colour(img, 33, 33, 33, 0.1), 200);
}

TEST_F(PlotTest, LineChartRocWithDiagonalAndSteps) {
  LineChart c;
  c.title = "ROC (test set, n = 200)";
  c.x_label = "false positive rate (1 - specificity)";
  c.y_label = "true positive rate (sensitivity)";
  c.x_min = 0;
  c.x_max = 1;
  c.y_min = 0;
  c.y_max = 1;
  c.diagonal = true;
  Series a{"ResNet-18 (AUC 0.962)",
           {0, 0, 0.05, 0.05, 0.1, 0.2, 0.4, 1},
           {0, 0.6, 0.6, 0.85, 0.92, 0.96, 0.99, 1}};
  Series b{"baseline CNN (AUC 0.871)",
           {0, 0.1, 0.2, 0.35, 0.6, 1},
           {0, 0.45, 0.7, 0.85, 0.95, 1},
           true,
           true};
  c.series = {a, b};
  c.width = 520;
  c.height = 500;
  const std::string path = out("line_roc.png");
  save_line_chart(c, path);
  const torch::Tensor img = read_png(path);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 500, 520}));
  EXPECT_GT(count_colour(img, kBlue[0], kBlue[1], kBlue[2]), 300);
  EXPECT_GT(count_colour(img, kOrange[0], kOrange[1], kOrange[2]), 200);
}

TEST_F(PlotTest, LineChartSkipsNaNAndHandlesConstantData) {
  LineChart c;
  c.title = "NaN and constant";
  // A NaN or infinity must neither poison the axis range (nothing would be
  // drawn) nor be connected.
  c.series = {Series{"with NaN",
                     {0, 1, 2, 3, 4, 5, 6},
                     {0.5, kNaN, 0.7, 0.6,
                      std::numeric_limits<double>::infinity(), 0.4, 0.3}},
              Series{"constant", {0, 6}, {0.55, 0.55}}};
  const std::string path = out("line_nan.png");
  save_line_chart(c, path);
  torch::Tensor img = read_png(path);
  EXPECT_GT(count_colour(img, kBlue[0], kBlue[1], kBlue[2]), 150);
  EXPECT_GT(count_colour(img, kOrange[0], kOrange[1], kOrange[2]), 300);

  // Only a constant series: the axis must get a non-zero range.
  c.series = {Series{"flat", {1, 2, 3}, {2, 2, 2}}};
  save_line_chart(c, out("line_constant.png"));
  img = read_png(out("line_constant.png"));
  EXPECT_GT(count_colour(img, kBlue[0], kBlue[1], kBlue[2]), 300);

  // Only NaN, or no series at all: still a valid (empty) chart.
  c.series = {Series{"nan", {kNaN, 1}, {1, kNaN}}};
  save_line_chart(c, out("line_all_nan.png"));
  EXPECT_EQ(read_png(out("line_all_nan.png")).size(2), 720);
  c.series.clear();
  save_line_chart(c, out("line_empty.png"));
  EXPECT_EQ(read_png(out("line_empty.png")).size(1), 460);
}

TEST_F(PlotTest, LineChartRejectsBadInput) {
  LineChart c;
  c.series = {Series{"bad", {1, 2, 3}, {1, 2}}};
  try {
    save_line_chart(c, out("bad.png"));
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'bad'"), std::string::npos)
        << e.what();
  }
  c.series = {Series{"ok", {1, 2}, {1, 2}}};
  c.x_min = 2;
  c.x_max = 1;
  EXPECT_THROW(save_line_chart(c, out("bad.png")), ConfigError);
  c.x_min.reset();
  c.x_max.reset();
  c.width = 50;
  EXPECT_THROW(save_line_chart(c, out("bad.png")), ConfigError);
  EXPECT_FALSE(std::filesystem::exists(out("bad.png")));
}

TEST_F(PlotTest, LineChartsSideBySide) {
  LineChart loss = loss_chart();
  loss.width = 480;
  loss.height = 340;
  LineChart acc;
  acc.title = "Accuracy";
  acc.x_label = "epoch";
  acc.y_label = "accuracy";
  acc.width = 480;
  acc.height = 320;
  acc.series = {
      Series{"train", {1, 2, 3, 4, 5}, {0.6, 0.75, 0.82, 0.86, 0.9}},
      Series{
          "validation", {1, 2, 3, 4, 5}, {0.58, 0.7, 0.78, 0.8, 0.81}, true}};
  const std::string path = out("line_pair.png");
  save_line_charts({loss, acc}, path);
  const torch::Tensor img = read_png(path);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{3, 340, 960}));
  // Each half holds its own curves.
  using torch::indexing::Slice;
  EXPECT_GT(count_colour(img.index({Slice(), Slice(), Slice(0, 480)}), kBlue[0],
                         kBlue[1], kBlue[2]),
            150);
  EXPECT_GT(count_colour(img.index({Slice(), Slice(), Slice(480, 960)}),
                         kBlue[0], kBlue[1], kBlue[2]),
            150);
  EXPECT_THROW(save_line_charts({}, out("none.png")), ConfigError);
}

TEST_F(PlotTest, ConfusionMatrixWritesShadedPng) {
  const std::string path = out("confusion.png");
  save_confusion_matrix({{{95, 5}, {12, 88}}}, {"Normal", "COVID-19"},
                        "Confusion matrix (threshold 0.50)", path);
  const torch::Tensor img = read_png(path);
  EXPECT_GT(img.size(1), 300);
  EXPECT_GT(img.size(2), 300);
  // The 95% cell is close to the darkest blue of the ramp, the 5% cell
  // close to white-blue.
  EXPECT_GT(count_colour(img, 14, 62, 128, 0.08), 5000);
  EXPECT_GT(count_colour(img, 240, 246, 253, 0.03), 5000);
  EXPECT_THROW(
      save_confusion_matrix({{{1, -1}, {0, 0}}}, {"a", "b"}, "", out("x.png")),
      ConfigError);
  // An empty row (no cases of a class) is drawn, not divided by zero.
  save_confusion_matrix({{{0, 0}, {3, 7}}}, {"Normal", "COVID-19"}, "",
                        out("confusion_empty_row.png"));
  EXPECT_GT(read_png(out("confusion_empty_row.png")).size(1), 300);
}

TEST_F(PlotTest, ImageGridWritesTilesCaptionsAndColourBar) {
  std::vector<Tile> tiles;
  const torch::Tensor ramp =
      torch::linspace(0, 1, 64).view({1, 64}).expand({64, 64}).contiguous();
  tiles.push_back({ramp, "ramp\nsecond line"});
  torch::Tensor red = torch::zeros({3, 48, 48});
  red[0].fill_(1.0);
  tiles.push_back({red, "pure red"});
  torch::Tensor blue = torch::zeros({3, 20, 40});  // wide: keeps aspect
  blue[2].fill_(1.0);
  tiles.push_back({blue, "pure blue, a caption much too long to fit the tile"});
  tiles.push_back({colormap_viridis(ramp.t()), "viridis\nthird\nfourth"});
  tiles.push_back({torch::full({32, 32}, 2.0), "clipped to white"});
  GridOptions opt;
  opt.title = "Test grid";
  opt.columns = 3;
  opt.tile_size = 96;
  opt.colorbar = true;
  opt.colorbar_label = "Grad-CAM (normalised)";
  const std::string path = out("grid.png");
  save_image_grid(tiles, opt, path);
  const torch::Tensor img = read_png(path);
  EXPECT_GE(img.size(2), 3 * 96 + 40);
  EXPECT_GE(img.size(1), 2 * 96 + 30);
  // Channel order survives the ARGB conversion and tiles are scaled to 96.
  EXPECT_GE(count_colour(img, 255, 0, 0, 0.02), 90 * 90);
  EXPECT_GE(count_colour(img, 0, 0, 255, 0.02), 90 * 44);
  EXPECT_LT(count_colour(img, 0, 0, 255, 0.02), 96 * 50);
  // The colour bar contains both viridis ends.
  EXPECT_GT(count_colour(img, 68, 1, 84, 0.03), 10);
  EXPECT_GT(count_colour(img, 253, 231, 37, 0.03), 10);
}

TEST_F(PlotTest, ImageGridRejectsBadTiles) {
  GridOptions opt;
  EXPECT_THROW(save_image_grid({}, opt, out("g.png")), ConfigError);
  EXPECT_THROW(
      save_image_grid({{torch::zeros({2, 8, 8}), ""}}, opt, out("g.png")),
      ConfigError);
  EXPECT_THROW(save_image_grid({{torch::Tensor(), ""}}, opt, out("g.png")),
               ConfigError);
  opt.columns = 0;
  EXPECT_THROW(save_image_grid({{torch::zeros({8, 8}), ""}}, opt, out("g.png")),
               ConfigError);
}

TEST_F(PlotTest, WriteFailureIsIoErrorNamingPath) {
  // The target is an existing folder: the final rename must fail.
  const std::string dir = (tmp_ / "taken.png").string();
  std::filesystem::create_directories(dir);
  try {
    save_confusion_matrix({{{1, 2}, {3, 4}}}, {"a", "b"}, "t", dir);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("taken.png"), std::string::npos)
        << e.what();
  }
  // The parent is a file: the folder cannot be created.
  cxr::testing::write_bytes(tmp_ / "file", "x");
  EXPECT_THROW(
      save_line_chart(loss_chart(), (tmp_ / "file" / "p.png").string()),
      IoError);
}

TEST(VizColormap, ViridisEndpointsAndMiddle) {
  const torch::Tensor v = torch::tensor({0.0f, 0.5f, 1.0f}).view({1, 3});
  const torch::Tensor c = colormap_viridis(v);
  ASSERT_EQ(c.sizes(), (std::vector<int64_t>{3, 1, 3}));
  EXPECT_EQ(c.scalar_type(), torch::kFloat);
  const auto a = c.accessor<float, 3>();
  EXPECT_NEAR(a[0][0][0], 0.267, 2e-3);
  EXPECT_NEAR(a[1][0][0], 0.005, 2e-3);
  EXPECT_NEAR(a[2][0][0], 0.329, 2e-3);
  EXPECT_NEAR(a[0][0][1], 0.128, 3e-3);
  EXPECT_NEAR(a[1][0][1], 0.565, 3e-3);
  EXPECT_NEAR(a[2][0][1], 0.551, 3e-3);
  EXPECT_NEAR(a[0][0][2], 0.993, 2e-3);
  EXPECT_NEAR(a[1][0][2], 0.906, 2e-3);
  EXPECT_NEAR(a[2][0][2], 0.144, 2e-3);
}

TEST(VizColormap, ClipsNaNAndIsMonotoneInGreen) {
  const torch::Tensor v = torch::tensor({-1.0f, NAN, 2.0f});
  const torch::Tensor c = colormap_viridis(v);
  ASSERT_EQ(c.sizes(), (std::vector<int64_t>{3, 3}));
  const torch::Tensor zero = colormap_viridis(torch::zeros({1}));
  const torch::Tensor one = colormap_viridis(torch::ones({1}));
  EXPECT_TRUE(torch::allclose(c.select(1, 0), zero.select(1, 0)));
  EXPECT_TRUE(torch::allclose(c.select(1, 1), zero.select(1, 0)));
  EXPECT_TRUE(torch::allclose(c.select(1, 2), one.select(1, 0)));
  const torch::Tensor g = colormap_viridis(torch::linspace(0, 1, 1000))[1];
  EXPECT_TRUE((g.slice(0, 1) - g.slice(0, 0, -1) > 0).all().item<bool>());
  EXPECT_THROW(colormap_viridis(torch::Tensor()), ConfigError);
}

TEST(VizOverlay, BlendsAndKeepsShape) {
  const torch::Tensor gray = torch::full({4, 5}, 0.5);
  const torch::Tensor heat = torch::rand({4, 5});
  const torch::Tensor o = overlay_heatmap(gray, heat, 0.4);
  ASSERT_EQ(o.sizes(), (std::vector<int64_t>{3, 4, 5}));
  const torch::Tensor expected = 0.6 * 0.5 + 0.4 * colormap_viridis(heat);
  EXPECT_TRUE(torch::allclose(o, expected, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(overlay_heatmap(gray, heat, 0.0),
                              torch::full({3, 4, 5}, 0.5)));
  EXPECT_TRUE(torch::allclose(overlay_heatmap(gray.unsqueeze(0), heat, 1.0),
                              colormap_viridis(heat)));
}

void expect_config_error(const torch::Tensor& gray,
                         const torch::Tensor& heat,
                         double alpha,
                         const std::string& needle) {
  try {
    overlay_heatmap(gray, heat, alpha);
    FAIL() << "expected ConfigError mentioning " << needle;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << e.what();
  }
}

TEST(VizOverlay, RejectsBadInputsNamingTheProblem) {
  const torch::Tensor gray = torch::full({8, 8}, 0.5);
  expect_config_error(gray, torch::rand({7, 7}), 0.5, "resize");
  expect_config_error(gray, torch::full({8, 8}, 1.5), 0.5, "heat map");
  expect_config_error(torch::full({8, 8}, -0.2), torch::rand({8, 8}), 0.5,
                      "gray image");
  expect_config_error(gray, torch::full({8, 8}, NAN), 0.5, "NaN");
  expect_config_error(gray, torch::rand({8, 8}), 1.5, "alpha");
  expect_config_error(gray, torch::rand({8, 8}), std::nan(""), "alpha");
  expect_config_error(torch::rand({3, 8, 8}), torch::rand({8, 8}), 0.5,
                      "[H, W]");
}

TEST(PlotNiceTicks, HandCases) {
  // Exact equality: ticks are the doubles nearest to their decimals.
  EXPECT_EQ(nice_ticks(0, 1, 7),
            (std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1}));
  EXPECT_EQ(nice_ticks(0.23, 0.69, 7),
            (std::vector<double>{0.3, 0.4, 0.5, 0.6}));
  EXPECT_EQ(nice_ticks(0, 1, 4), (std::vector<double>{0, 0.5, 1}));
  EXPECT_EQ(nice_ticks(0, 1, 5), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(nice_ticks(-3, 7, 6), (std::vector<double>{-2, 0, 2, 4, 6}));
  EXPECT_EQ(nice_ticks(2, 2), (std::vector<double>{2}));
  EXPECT_TRUE(nice_ticks(1, 0).empty());
  EXPECT_TRUE(nice_ticks(kNaN, 1).empty());
  EXPECT_TRUE(nice_ticks(-1e308, 1e308).empty());
  // A tiny range far from zero must terminate and stay within max_ticks.
  EXPECT_LE(nice_ticks(1e9, 1e9 + 1e-7, 5).size(), 5u);
  for (double hi : {0.013, 3.7, 42.0, 999.0, 1.5e6}) {
    for (int max_ticks : {3, 4, 5, 8, 11}) {
      const std::vector<double> t = nice_ticks(0.001, hi, max_ticks);
      EXPECT_GE(t.size(), 2u) << hi << " " << max_ticks;
      EXPECT_LE(static_cast<int>(t.size()), max_ticks) << hi;
      const double slack = 1e-9 * hi;
      for (double v : t) {
        EXPECT_GE(v, 0.001 - slack) << hi << " " << max_ticks;
        EXPECT_LE(v, hi + slack) << hi << " " << max_ticks;
      }
    }
  }
}

}  // namespace
}  // namespace cxr::viz
