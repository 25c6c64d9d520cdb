// Input checks (colour, contrast, aspect, size, correlation with the
// training mean) on synthetic images made for each, and the chroma that
// decode_gray measures for colour files.
#include <cmath>
#include <cstdio>
// jpeglib.h needs FILE and size_t first.
#include <jpeglib.h>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "cxr/infer/input_check.h"
#include "jpeg_writer.h"
#include "test_util.h"

namespace {

using cxr::data::GrayImage;
using cxr::infer::check_input;
using cxr::infer::InputCheckOptions;
using cxr::infer::reference_correlation;

/// A chest-X-ray-like picture [n, n] in [0, 1]: dark background, a bright
/// body with two dark lung fields and a bright spine, plus noise.
torch::Tensor xray_like(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto opt = torch::TensorOptions().dtype(torch::kFloat32);
  const torch::Tensor c = (torch::arange(n, opt) + 0.5) / n;  // 0..1
  const torch::Tensor y = c.view({n, 1}).expand({n, n});
  const torch::Tensor x = c.view({1, n}).expand({n, n});
  auto ellipse = [&](double cx, double cy, double rx, double ry) {
    return ((x - cx) / rx).pow(2) + ((y - cy) / ry).pow(2) < 1.0;
  };
  torch::Tensor img = torch::full({n, n}, 0.1, opt);
  img = torch::where(ellipse(0.5, 0.55, 0.45, 0.5), torch::full_like(img, 0.7),
                     img);
  img = torch::where(ellipse(0.3, 0.5, 0.13, 0.3), torch::full_like(img, 0.25),
                     img);
  img = torch::where(ellipse(0.7, 0.5, 0.13, 0.3), torch::full_like(img, 0.25),
                     img);
  img = torch::where((x - 0.5).abs() < 0.04, torch::full_like(img, 0.85), img);
  img = img + 0.05 * torch::randn({n, n}, gen, opt);
  return img.clamp(0, 1);
}

GrayImage gray(torch::Tensor px) {
  GrayImage g;
  g.pixels = px.contiguous();
  g.info.height = static_cast<int>(px.size(0));
  g.info.width = static_cast<int>(px.size(1));
  g.info.channels = 1;
  g.info.format = "png";
  g.info.color = "gray";
  return g;
}

/// The "training mean": the clean X-ray-like picture at 32 x 32.
torch::Tensor reference() {
  return cxr::data::resize_square(xray_like(128, 99), 32);
}

/// Writes an RGB JPEG (quality 95) with libjpeg; `rgb` is [h][w][3].
void write_rgb_jpeg(const std::string& path,
                    int w,
                    int h,
                    const std::vector<uint8_t>& rgb) {
  cxr::testing::write_bytes(path,
                            cxr::testing::jpeg_of(w, h, 3, JCS_RGB, rgb, 95));
}

bool has(const std::vector<std::string>& reasons, const std::string& s) {
  for (const auto& r : reasons) {
    if (r.find(s) != std::string::npos) return true;
  }
  return false;
}

std::string joined(const std::vector<std::string>& reasons) {
  std::string s;
  for (const auto& r : reasons) s += "[" + r + "] ";
  return s;
}

TEST(InputCheck, XrayLikeImagePassesEveryCheck) {
  for (uint64_t seed : {1, 2, 3}) {
    const auto r = check_input(gray(xray_like(200, seed)), 128, reference());
    EXPECT_TRUE(r.empty()) << joined(r);
  }
  // Non-square and larger than the input is fine too.
  const auto wide =
      cxr::data::resize_square(xray_like(256, 4), 256).slice(0, 0, 200);
  const auto r = check_input(gray(wide), 128, reference());
  EXPECT_TRUE(r.empty()) << joined(r);
}

TEST(InputCheck, ColourPhotographIsFlaggedWithItsSpread) {
  GrayImage g = gray(xray_like(128, 1));
  g.info.color = "rgb";
  g.info.channels = 3;
  g.info.chroma = 0.31;
  const auto r = check_input(g, 128, reference());
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(r[0],
            "colour photograph: mean channel spread 0.31 > 0.04 (X-rays are "
            "gray)");
  g.info.chroma = 0.01;  // a gray X-ray saved as RGB passes
  EXPECT_TRUE(check_input(g, 128, reference()).empty());
}

TEST(InputCheck, NearlyConstantImageIsFlaggedWithItsStd) {
  auto gen = at::detail::createCPUGenerator(5);
  const torch::Tensor px =
      0.5 + 0.004 * torch::randn({128, 128}, gen, torch::kFloat32);
  const auto r = check_input(gray(px), 128, reference());
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(r[0].rfind("nearly constant: pixel std 0.00", 0), 0u) << r[0];
  EXPECT_NE(r[0].find(" < 0.020"), std::string::npos) << r[0];
  // A constant image: std 0, no correlation reason on top.
  const auto c =
      check_input(gray(torch::full({64, 64}, 0.3)), 128, reference());
  ASSERT_EQ(c.size(), 1u) << joined(c);
  EXPECT_EQ(c[0], "nearly constant: pixel std 0.000 < 0.020");
}

TEST(InputCheck, ExtremeAspectRatioIsFlagged) {
  const torch::Tensor strip = xray_like(448, 6).slice(0, 0, 128);  // 128x448
  const auto r = check_input(gray(strip), 128, torch::Tensor());
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(r[0], "extreme aspect ratio: 3.50 > 2.0");
}

TEST(InputCheck, TinyImageIsFlagged) {
  const torch::Tensor small = cxr::data::resize_square(xray_like(128, 7), 20);
  const auto r = check_input(gray(small), 128, reference());
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(r[0], "image too small: 20 px < 25 % of the model's 128 px input");
  // No model size known: no size check.
  EXPECT_TRUE(check_input(gray(small), 0, reference()).empty());
}

TEST(InputCheck, InvertedFilmIsFlaggedWithItsCorrelation) {
  const torch::Tensor px = 1.0 - xray_like(160, 8);
  const auto r = check_input(gray(px), 128, reference());
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(
      r[0].rfind("inverted film?: correlation with the training images' mean -",
                 0),
      0u)
      << r[0];
  const double c = reference_correlation(px, reference());
  EXPECT_LT(c, -0.8);
  char value[16];
  std::snprintf(value, sizeof value, "%.2f", c);
  EXPECT_NE(r[0].find(value), std::string::npos) << r[0];
}

TEST(InputCheck, UncorrelatedImageIsUnlikeTheTrainingImages) {
  // A vertical ramp against a horizontal-ramp reference: correlation 0.
  const torch::Tensor ramp = torch::linspace(0, 1, 64).view({1, 64});
  const torch::Tensor ref = ramp.expand({64, 64}).contiguous();
  const torch::Tensor img = ramp.t().expand({64, 64}).contiguous();
  EXPECT_NEAR(reference_correlation(img, ref), 0.0, 1e-6);
  InputCheckOptions o;
  o.min_reference_correlation = 0.5;
  const auto r = check_input(gray(img), 64, ref, o);
  ASSERT_EQ(r.size(), 1u) << joined(r);
  EXPECT_EQ(r[0].rfind("unlike the training images: correlation ", 0), 0u)
      << r[0];
  EXPECT_NE(r[0].find("< 0.50"), std::string::npos) << r[0];
  // Without a reference the check is skipped.
  EXPECT_TRUE(check_input(gray(img), 64, torch::Tensor(), o).empty());
}

TEST(InputCheck, EveryReasonIsOneLineWithACode) {
  GrayImage g = gray(torch::full({10, 40}, 0.5));
  g.info.chroma = 0.5;
  const auto r = check_input(g, 128, reference());
  EXPECT_EQ(r.size(), 4u) << joined(r);  // colour, constant, aspect, size
  for (const auto& s : r) {
    EXPECT_EQ(s.find('\n'), std::string::npos) << s;
    const auto colon = s.find(": ");
    ASSERT_NE(colon, std::string::npos) << s;
    EXPECT_LT(colon, 30u) << s;
  }
  EXPECT_TRUE(has(r, "colour photograph"));
  EXPECT_TRUE(has(r, "image too small: 10 px"));
}

TEST(InputCheck, ReferenceCorrelationResizesAndHandlesConstants) {
  const torch::Tensor ref = reference();
  const torch::Tensor img = xray_like(128, 99);
  EXPECT_GT(reference_correlation(img, ref), 0.99);
  EXPECT_LT(reference_correlation(1.0 - img, ref), -0.99);
  EXPECT_NEAR(reference_correlation(ref, ref), 1.0, 1e-9);
  // Non-square images are squeezed to the reference's size.
  const torch::Tensor tall = torch::nn::functional::interpolate(
      img.view({1, 1, 128, 128}),
      torch::nn::functional::InterpolateFuncOptions()
          .size(std::vector<int64_t>{180, 100})
          .mode(torch::kBilinear)
          .align_corners(false))[0][0];
  EXPECT_GT(reference_correlation(tall, ref), 0.95);
  EXPECT_TRUE(
      std::isnan(reference_correlation(torch::full({50, 50}, 0.2), ref)));
  EXPECT_TRUE(std::isnan(reference_correlation(img, torch::zeros({32, 32}))));
  EXPECT_THROW(reference_correlation(torch::zeros({2, 3, 4}), ref),
               cxr::ConfigError);
}

TEST(InputCheckChroma, GrayRgbIsZeroAndSaturatedRedIsOne) {
  cxr::testing::TempDir dir;
  const torch::Tensor g =
      torch::arange(0, 48, torch::kFloat32).view({6, 8}) / 47.0f;
  // A gray picture stored as RGB: chroma 0, gray pixels as stored.
  const auto gray_rgb = (dir / "gray_rgb.png").string();
  cxr::data::write_png(gray_rgb, g.unsqueeze(0).repeat({3, 1, 1}));
  const auto a = cxr::data::read_gray(gray_rgb);
  EXPECT_EQ(a.info.color, "rgb");
  EXPECT_NEAR(a.info.chroma, 0.0, 1e-12);
  EXPECT_TRUE(torch::allclose(a.pixels, g, 0, 1.0 / 255 + 1e-6));
  // The same picture stored gray: same pixels, same hash.
  const auto gray_png = (dir / "gray.png").string();
  cxr::data::write_png(gray_png, g);
  const auto b = cxr::data::read_gray(gray_png);
  EXPECT_EQ(b.info.color, "gray");
  EXPECT_EQ(b.info.chroma, 0.0);
  EXPECT_TRUE(torch::equal(a.pixels, b.pixels));
  EXPECT_EQ(a.pixel_hash, b.pixel_hash);
  // Saturated red: spread 1 everywhere; gray is stb's (77 * 255) >> 8 = 76.
  torch::Tensor red = torch::zeros({3, 6, 8});
  red[0].fill_(1.0);
  const auto red_png = (dir / "red.png").string();
  cxr::data::write_png(red_png, red);
  const auto r = cxr::data::read_gray(red_png);
  EXPECT_NEAR(r.info.chroma, 1.0, 1e-12);
  EXPECT_NEAR(r.pixels.mean().item<double>(), 76.0 / 255.0, 1e-6);
  // RGBA: alpha is ignored; half the pixels red, half gray: 0.5.
  torch::Tensor rgba = torch::ones({4, 6, 8}) * 0.5;
  rgba.slice(1, 0, 3).slice(0, 0, 3).zero_();
  rgba.slice(1, 0, 3)[0].fill_(1.0);
  rgba[3].fill_(0.2);
  const auto rgba_png = (dir / "rgba.png").string();
  cxr::data::write_png(rgba_png, rgba);
  const auto q = cxr::data::read_gray(rgba_png);
  EXPECT_EQ(q.info.color, "rgba");
  EXPECT_NEAR(q.info.chroma, 0.5, 1e-12);
  // The colour check fires on the red file and not on the gray RGB one.
  EXPECT_TRUE(has(check_input(r, 4, torch::Tensor()), "colour photograph"));
  EXPECT_FALSE(has(check_input(a, 4, torch::Tensor()), "colour photograph"));
}

TEST(InputCheckChroma, ColourJpegIsMeasuredAndGrayJpegIsNot) {
  cxr::testing::TempDir dir;
  const int w = 32, h = 32;
  std::vector<uint8_t> gray(w * h * 3), half(w * h * 3);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      uint8_t* g = &gray[(r * w + c) * 3];
      g[0] = g[1] = g[2] = static_cast<uint8_t>(4 * c + r);
      uint8_t* p = &half[(r * w + c) * 3];
      p[0] = 200;
      p[1] = p[2] = r < h / 2 ? 40 : 200;  // top half red, bottom light gray
    }
  }
  const auto gp = (dir / "gray.jpg").string();
  const auto hp = (dir / "half.jpg").string();
  write_rgb_jpeg(gp, w, h, gray);
  write_rgb_jpeg(hp, w, h, half);
  const auto g = cxr::data::read_gray(gp);
  EXPECT_EQ(g.info.format, "jpeg");
  EXPECT_LT(g.info.chroma, 0.02);
  const auto q = cxr::data::read_gray(hp);
  EXPECT_EQ(q.info.channels, 3);
  // Half the pixels spread (200 - 40) / 255 = 0.63, half 0: about 0.31.
  EXPECT_NEAR(q.info.chroma, 0.5 * 160.0 / 255.0, 0.03);
  ASSERT_EQ(q.pixels.sizes(), torch::IntArrayRef({h, w}));
}

}  // namespace
