// Cheap out-of-distribution checks on a decoded image: colour, contrast,
// aspect ratio, size, and correlation with the training split's mean image.
#include "cxr/infer/input_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "cxr/common/error.h"

namespace cxr::infer {
namespace {

/// A failed correlation is called an inverted film when the negative image
/// would clear the limit by this much.
constexpr double kInvertedMargin = 0.2;

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

/// [H, W] float32 on the CPU from [H, W] or [1, H, W].
torch::Tensor as_plane(const torch::Tensor& t, const char* what) {
  if (!t.defined()) {
    throw ConfigError(std::string(what) + " is undefined");
  }
  torch::Tensor x = t.detach().to(torch::kCPU, torch::kFloat32);
  if (x.dim() == 3 && x.size(0) == 1) x = x[0];
  if (x.dim() != 2 || x.size(0) < 1 || x.size(1) < 1) {
    throw ConfigError(std::string(what) +
                      ": expected a non-empty [H, W] image, got " +
                      std::to_string(t.dim()) + "-d");
  }
  return x;
}

}  // namespace

double reference_correlation(const torch::Tensor& image,
                             const torch::Tensor& reference) {
  const torch::Tensor ref = as_plane(reference, "reference image");
  torch::Tensor x = as_plane(image, "image");
  const int64_t rh = ref.size(0), rw = ref.size(1);
  if (x.size(0) != rh || x.size(1) != rw) {
    // Antialiased bilinear, as data::resize_square makes the training
    // images (a non-square image is squeezed like they are).
    namespace F = torch::nn::functional;
    const bool down = x.size(0) > rh || x.size(1) > rw;
    x = F::interpolate(x.unsqueeze(0).unsqueeze(0),
                       F::InterpolateFuncOptions()
                           .size(std::vector<int64_t>{rh, rw})
                           .mode(torch::kBilinear)
                           .align_corners(false)
                           .antialias(down))[0][0];
  }
  const torch::Tensor a = x.to(torch::kFloat64) - x.to(torch::kFloat64).mean();
  const torch::Tensor b =
      ref.to(torch::kFloat64) - ref.to(torch::kFloat64).mean();
  const double saa = (a * a).sum().item<double>();
  const double sbb = (b * b).sum().item<double>();
  const double n = static_cast<double>(a.numel());
  // Constant (up to float rounding): no correlation is defined.
  if (saa <= 1e-12 * n || sbb <= 1e-12 * n) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  const double r = (a * b).sum().item<double>() / std::sqrt(saa * sbb);
  return std::clamp(r, -1.0, 1.0);
}

std::vector<std::string> check_input(const data::GrayImage& image,
                                     int input_size,
                                     const torch::Tensor& reference,
                                     const InputCheckOptions& options) {
  std::vector<std::string> reasons;
  if (!image.pixels.defined() || image.pixels.numel() == 0) {
    reasons.push_back("empty image: 0 pixels");
    return reasons;
  }
  const torch::Tensor px = as_plane(image.pixels, "image");
  const int64_t h = px.size(0), w = px.size(1);

  if (image.info.chroma > options.max_chroma) {
    reasons.push_back("colour photograph: mean channel spread " +
                      fixed(image.info.chroma, 2) + " > " +
                      fixed(options.max_chroma, 2) + " (X-rays are gray)");
  }

  const double sd =
      px.numel() > 1 ? px.to(torch::kFloat64).std(false).item<double>() : 0.0;
  const bool constant = sd < options.min_contrast;
  if (constant) {
    reasons.push_back("nearly constant: pixel std " + fixed(sd, 3) + " < " +
                      fixed(options.min_contrast, 3));
  }

  const double aspect =
      static_cast<double>(std::max(h, w)) / static_cast<double>(std::min(h, w));
  if (aspect > options.max_aspect) {
    reasons.push_back("extreme aspect ratio: " + fixed(aspect, 2) + " > " +
                      fixed(options.max_aspect, 1));
  }

  if (input_size > 0) {
    const int64_t side = std::min(h, w);
    if (side < options.min_side_fraction * input_size) {
      reasons.push_back("image too small: " + std::to_string(side) + " px < " +
                        fixed(100.0 * options.min_side_fraction, 0) +
                        " % of the model's " + std::to_string(input_size) +
                        " px input");
    }
  }

  if (reference.defined() && !constant) {
    const double r = reference_correlation(px, reference);
    // Orientation: a film turned by 90, 180 or 270 degrees matches the
    // training images' mean better when the mean is turned the same way.
    double best = -2;
    int best_turns = 0;
    for (int turns = 1; turns <= 3; ++turns) {
      const double rr =
          reference_correlation(px, torch::rot90(reference, turns, {0, 1}));
      if (std::isfinite(rr) && rr > best) {
        best = rr;
        best_turns = turns;
      }
    }
    if (std::isfinite(r) && r >= options.min_reference_correlation &&
        best - r > options.max_rotation_gain) {
      reasons.push_back(
          "rotated?: correlation with the training images' "
          "mean turned by " +
          std::to_string(90 * best_turns) + " degrees is " + fixed(best, 2) +
          " vs " + fixed(r, 2) + " upright (gain > " +
          fixed(options.max_rotation_gain, 2) + ")");
    }
    const double lo = options.min_reference_correlation;
    if (std::isfinite(r) && r < lo) {
      // The negative of the image would pass comfortably: most likely a
      // film with inverted gray values (MONOCHROME1 read as MONOCHROME2).
      if (-r >= std::max(lo, 0.0) + kInvertedMargin) {
        reasons.push_back(
            "inverted film?: correlation with the training images' mean " +
            fixed(r, 2) + " < " + fixed(lo, 2));
      } else {
        reasons.push_back("unlike the training images: correlation " +
                          fixed(r, 2) + " < " + fixed(lo, 2) +
                          " with their mean image");
      }
    }
  }
  return reasons;
}

}  // namespace cxr::infer
