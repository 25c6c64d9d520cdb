#pragma once
/// Batched, seeded augmentation on the model's device: one random affine
/// transform per image (width shift, rotation, zoom; no flips, which are
/// unrealistic for chest X-rays), applied with affine_grid/grid_sample.
#include <torch/torch.h>

#include <cstdint>

namespace cxr::augment {

struct AugmentOptions {
  /// Max horizontal shift as a fraction of the width (Keras width_shift_range).
  double width_shift = 0.10;
  /// Max vertical shift as a fraction of the height.
  double height_shift = 0.0;
  /// Max rotation in degrees (uniform in [-r, r]).
  double rotation_deg = 15.0;
  /// Zoom range: scale uniform in [1 - zoom, 1 + zoom] (isotropic).
  double zoom = 0.20;
  /// Throws ConfigError for negative or absurd ranges.
  void validate() const;
  bool is_identity() const {
    return width_shift == 0 && height_shift == 0 && rotation_deg == 0 &&
           zoom == 0;
  }
};

/// Random transform parameters for `n` images, drawn on the CPU from `seed`
/// (so results do not depend on the device). Returns theta [n, 2, 3] float32
/// in affine_grid's convention: output pixel p samples input at theta @ [p,1]
/// (normalised coordinates in [-1, 1], align_corners = false).
torch::Tensor random_thetas(int64_t n,
                            const AugmentOptions& options,
                            uint64_t seed);

/// Applies theta [N, 2, 3] to images [N, C, H, W] (float, any device).
/// Pixels sampled outside the image repeat the border (Keras 'nearest').
torch::Tensor apply_affine(const torch::Tensor& images,
                           const torch::Tensor& theta);

/// random_thetas + apply_affine on images' device.
torch::Tensor random_affine(const torch::Tensor& images,
                            const AugmentOptions& options,
                            uint64_t seed);

/// Where an output pixel (x, y in normalised [-1,1] coordinates) reads from
/// in the input, for image `i` of theta. For tests and explanations.
std::pair<double, double> source_point(const torch::Tensor& theta,
                                       int64_t i,
                                       double x,
                                       double y);

}  // namespace cxr::augment

namespace cxr::augment {
/// Writes a grid: each row shows one original image followed by `per_image`
/// augmented versions (so a person can check they still look like X-rays).
/// images: [N, 1, S, S] uint8; uses the first `rows` images.
void write_preview(const torch::Tensor& images,
                   const AugmentOptions& options,
                   const std::string& png_path,
                   int rows = 4,
                   int per_image = 7,
                   uint64_t seed = 1);
}  // namespace cxr::augment
