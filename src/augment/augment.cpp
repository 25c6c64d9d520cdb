#include "cxr/augment/augment.h"

#include "cxr/common/error.h"

namespace cxr::augment {

void AugmentOptions::validate() const {
  if (width_shift < 0 || width_shift > 0.5 || height_shift < 0 ||
      height_shift > 0.5) {
    throw ConfigError("--width-shift/--height-shift must be in [0, 0.5]");
  }
  if (rotation_deg < 0 || rotation_deg > 180) {
    throw ConfigError("--rotation must be in [0, 180] degrees");
  }
  if (zoom < 0 || zoom >= 1) throw ConfigError("--zoom must be in [0, 1)");
}

torch::Tensor random_thetas(int64_t n, const AugmentOptions& o, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto u = [&](double r) {
    // uniform in [-r, r]
    return (torch::rand({n}, gen, torch::kFloat64) * 2.0 - 1.0) * r;
  };
  torch::Tensor angle = u(o.rotation_deg) * (M_PI / 180.0);
  torch::Tensor scale = 1.0 + u(o.zoom);
  // Normalised coordinates span 2 units per image side.
  torch::Tensor tx = u(o.width_shift) * 2.0;
  torch::Tensor ty = u(o.height_shift) * 2.0;
  // Output p reads input at R(angle) * p / scale + t: zoom > 1 magnifies.
  torch::Tensor c = torch::cos(angle) / scale;
  torch::Tensor s = torch::sin(angle) / scale;
  torch::Tensor theta = torch::stack(
      {torch::stack({c, -s, tx}, 1), torch::stack({s, c, ty}, 1)}, 1);
  return theta.to(torch::kFloat32);
}

torch::Tensor apply_affine(const torch::Tensor& images,
                           const torch::Tensor& theta) {
  namespace F = torch::nn::functional;
  auto t = theta.to(images.device(), images.scalar_type());
  auto grid = F::affine_grid(t, images.sizes().vec(), /*align_corners=*/false);
  return F::grid_sample(images, grid,
                        F::GridSampleFuncOptions()
                            .mode(torch::kBilinear)
                            .padding_mode(torch::kBorder)
                            .align_corners(false));
}

torch::Tensor random_affine(const torch::Tensor& images,
                            const AugmentOptions& options,
                            uint64_t seed) {
  if (options.is_identity()) return images;
  return apply_affine(images, random_thetas(images.size(0), options, seed));
}

std::pair<double, double> source_point(const torch::Tensor& theta,
                                       int64_t i,
                                       double x,
                                       double y) {
  auto t = theta[i].to(torch::kCPU, torch::kFloat64);
  auto a = t.accessor<double, 2>();
  return {a[0][0] * x + a[0][1] * y + a[0][2],
          a[1][0] * x + a[1][1] * y + a[1][2]};
}

}  // namespace cxr::augment

#include "cxr/viz/plot.h"

namespace cxr::augment {

void write_preview(const torch::Tensor& images,
                   const AugmentOptions& options,
                   const std::string& png_path,
                   int rows,
                   int per_image,
                   uint64_t seed) {
  options.validate();
  torch::NoGradGuard no_grad;
  const int64_t n = std::min<int64_t>(rows, images.size(0));
  std::vector<viz::Tile> tiles;
  for (int64_t i = 0; i < n; ++i) {
    auto x = images[i].to(torch::kFloat32).div(255.0f).unsqueeze(0);
    auto rep = x.repeat({per_image, 1, 1, 1});
    auto theta =
        random_thetas(per_image, options, seed + static_cast<uint64_t>(i));
    auto aug = apply_affine(rep, theta);
    tiles.push_back({x[0][0], "original"});
    for (int k = 0; k < per_image; ++k) {
      const torch::Tensor th = theta[k];
      auto a = th.accessor<float, 2>();
      const double scale = 1.0 / std::hypot(a[0][0], a[1][0]);
      const double deg = std::atan2(a[1][0], a[0][0]) * 180.0 / M_PI;
      char cap[64];
      std::snprintf(cap, sizeof cap, "rot %+.0f deg\nzoom %.2f shift %+.2f",
                    deg, scale, a[0][2] / 2.0);
      tiles.push_back({aug[k][0], cap});
    }
  }
  viz::GridOptions g;
  g.title = "Augmentation preview (rotation, zoom, width shift; no flips)";
  g.columns = per_image + 1;
  g.tile_size = 150;
  viz::save_image_grid(tiles, g, png_path);
}

}  // namespace cxr::augment
