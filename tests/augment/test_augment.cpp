// Augmentation geometry: parameters stay in range, are seeded, and a known
// point moves where the transform says.
#include "cxr/augment/augment.h"
#include "cxr/common/error.h"
#include "test_util.h"

namespace {

using cxr::augment::AugmentOptions;

/// A Gaussian blob centred at normalised (cx, cy) on an s x s image.
torch::Tensor blob(int s, double cx, double cy, double sigma = 0.06) {
  // Pixel centres in normalised coordinates (align_corners = false).
  auto coords = (torch::arange(s, torch::kFloat64) + 0.5) / s * 2.0 - 1.0;
  auto y = coords.unsqueeze(1), x = coords.unsqueeze(0);
  auto g =
      torch::exp(-((x - cx).pow(2) + (y - cy).pow(2)) / (2 * sigma * sigma));
  return g.to(torch::kFloat32).unsqueeze(0).unsqueeze(0);
}

/// Intensity-weighted centroid in normalised coordinates.
std::pair<double, double> centroid(const torch::Tensor& img) {
  const int64_t s = img.size(-1);
  auto w = img.squeeze().to(torch::kFloat64);
  w = torch::where(w > 0.5 * w.max(), w, torch::zeros_like(w));
  auto coords = (torch::arange(s, torch::kFloat64) + 0.5) / s * 2.0 - 1.0;
  double total = w.sum().item<double>();
  double cx = (w.sum(0) * coords).sum().item<double>() / total;
  double cy = (w.sum(1) * coords).sum().item<double>() / total;
  return {cx, cy};
}

TEST(Augment, ParametersAreSeededAndWithinRange) {
  AugmentOptions o;
  auto a = cxr::augment::random_thetas(500, o, 11);
  auto b = cxr::augment::random_thetas(500, o, 11);
  auto c = cxr::augment::random_thetas(500, o, 12);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  auto cos_s = a.select(1, 0).select(1, 0).to(torch::kFloat64);
  auto sin_s = a.select(1, 1).select(1, 0).to(torch::kFloat64);
  auto angle = torch::atan2(sin_s, cos_s) * 180.0 / M_PI;
  auto inv_scale = torch::sqrt(cos_s * cos_s + sin_s * sin_s);
  EXPECT_LE(angle.abs().max().item<double>(), 15.0 + 1e-4);
  EXPECT_GT(angle.abs().max().item<double>(), 12.0);  // range is used
  EXPECT_GE((1.0 / inv_scale).min().item<double>(), 0.8 - 1e-5);
  EXPECT_LE((1.0 / inv_scale).max().item<double>(), 1.2 + 1e-5);
  auto tx = a.select(1, 0).select(1, 2);
  auto ty = a.select(1, 1).select(1, 2);
  EXPECT_LE(tx.abs().max().item<float>(), 0.2f + 1e-6f);  // 10 % of 2 units
  EXPECT_EQ(ty.abs().max().item<float>(), 0.0f);          // no height shift
}

TEST(Augment, IdentityReproducesTheImage) {
  auto img = torch::rand({2, 1, 24, 24});
  auto theta = torch::tensor({1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f})
                   .reshape({1, 2, 3})
                   .repeat({2, 1, 1});
  auto out = cxr::augment::apply_affine(img, theta);
  EXPECT_TRUE(torch::allclose(out, img, 1e-5, 1e-5));
  AugmentOptions none;
  none.width_shift = none.rotation_deg = none.zoom = 0;
  EXPECT_TRUE(torch::equal(cxr::augment::random_affine(img, none, 1), img));
}

TEST(Augment, AKnownPointMovesWhereTheTransformSays) {
  const int s = 96;
  const double px = 0.3, py = -0.2;
  auto img = blob(s, px, py);
  AugmentOptions o;
  o.rotation_deg = 30;
  o.zoom = 0.2;
  o.width_shift = 0.1;
  o.height_shift = 0.1;
  auto theta = cxr::augment::random_thetas(6, o, 5);
  auto out = cxr::augment::apply_affine(img.repeat({6, 1, 1, 1}), theta);
  for (int64_t i = 0; i < 6; ++i) {
    // Output centroid q reads the input at theta(q), which must be the blob.
    auto [qx, qy] = centroid(out[i]);
    auto [sx, sy] = cxr::augment::source_point(theta, i, qx, qy);
    EXPECT_NEAR(sx, px, 0.03) << "image " << i;
    EXPECT_NEAR(sy, py, 0.03) << "image " << i;
  }
  // A pure shift by +0.5 units reads from the right: content moves left.
  auto shift =
      torch::tensor({1.0f, 0.0f, 0.5f, 0.0f, 1.0f, 0.0f}).reshape({1, 2, 3});
  auto moved = cxr::augment::apply_affine(img, shift);
  EXPECT_NEAR(centroid(moved).first, px - 0.5, 0.03);
  EXPECT_NEAR(centroid(moved).second, py, 0.03);
}

TEST(Augment, InvalidRangesAreRefused) {
  AugmentOptions o;
  o.zoom = 1.5;
  EXPECT_THROW(o.validate(), cxr::ConfigError);
  o = {};
  o.rotation_deg = -1;
  EXPECT_THROW(o.validate(), cxr::ConfigError);
}

}  // namespace
