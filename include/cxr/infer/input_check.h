#pragma once
/// Cheap checks on a decoded image before the model sees it: is this like
/// the chest X-rays a cxr model was trained on? Each failed check yields one
/// reason string ("colour photograph: ..."), shown to the user with the
/// prediction; the model still scores the image, but the result is flagged
/// as out of distribution.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/data/image_io.h"

namespace cxr::infer {

/// Defaults calibrated on the 2200 real chest X-rays of cxr-seed
/// (train/val/test x COVID/Normal, 224x224 8-bit gray PNGs) with the mean
/// train image at 32 x 32 as reference and a 128 px model input
/// (tests/infer/data_input_check.cpp): 2190/2200 (99.55 %) pass every
/// check; 6 fail the correlation check (-0.20 .. -0.02; e.g. a film pasted
/// into the corner of a black canvas) and 4 the orientation check. Of the
/// 200 test images inverted (1 - x), 200 are flagged (198 named "inverted
/// film?"); of the 200 rotated by 90 degrees, 191 (95.5 %) by the
/// orientation check (the upright correlation alone caught 17.5 %). The
/// orientation margin was chosen from 0.10 (20 real flagged, 100 % rotated
/// caught), 0.30 (6 real, 96 %) and 0.35 (4 real, 95.5 %).
struct InputCheckOptions {
  /// Mean per-pixel channel spread (max - min of R, G, B, in [0, 1]; see
  /// data::ImageInfo::chroma) above which an image counts as a colour
  /// photograph (X-rays are gray). Measured: 0 for all 2200 real X-rays
  /// (gray PNGs); 0.15 .. 0.30 for the ImageNet test photos.
  double max_chroma = 0.04;
  /// Standard deviation of the gray pixels (in [0, 1]) below which an image
  /// counts as nearly constant. Measured on real X-rays: min 0.057, 1 %
  /// quantile 0.093, median 0.23.
  double min_contrast = 0.02;
  /// Longer side / shorter side above which the aspect ratio is extreme
  /// (real X-rays: 1.0 in cxr-seed; portrait/landscape films are up to ~1.3).
  double max_aspect = 2.0;
  /// An image whose shorter side is below this fraction of the model's
  /// input size is far smaller than what the model was trained on (the
  /// smallest real X-ray side is 224 px).
  double min_side_fraction = 0.25;
  /// Pearson correlation between the image and the training split's mean
  /// image (both at the reference's size) below which the image is
  /// flagged: an inverted (negative) film correlates negatively, a
  /// radiograph of another view or body part weakly. Measured on real
  /// X-rays: min -0.20, 0.1 % quantile -0.03, 0.5 % quantile 0.05, 1 %
  /// quantile 0.13, median 0.77; inverted test images: at most -0.06. A
  /// failed image is called "inverted film?" when its negative would clear
  /// the limit by 0.2 (correlation <= -(max(limit, 0) + 0.2)), else "unlike
  /// the training images".
  double min_reference_correlation = 0.0;
  /// A film is called rotated when the training images' mean turned by 90,
  /// 180 or 270 degrees correlates with it better than the upright mean by
  /// more than this.
  double max_rotation_gain = 0.35;
};

/// Reasons why `image` does not look like the model's training images; empty
/// when it passes every check. Each reason is one line, a short code, a
/// colon, the measured value and the limit, e.g. "colour photograph: mean
/// channel spread 0.31 > 0.04 (X-rays are gray)", "nearly constant: pixel
/// std 0.004 < 0.020", "extreme aspect ratio: 3.20 > 2.0", "image too small:
/// 40 px < 25 % of the model's 128 px input", "inverted film?: correlation
/// with the training images' mean -0.62 < 0.00", "unlike the training
/// images: correlation 0.03 < 0.00 with their mean image". The size comes
/// from `image.pixels` ([H, W] or [1, H, W]), the colour from
/// `image.info.chroma`. `input_size` is the model's input side (<= 0 = skip
/// the size check). `reference` is the mean training image as [h, w] float32
/// in [0, 1] (undefined = skip the correlation check; it is also skipped for
/// a nearly constant image). An empty image gives "empty image: 0 pixels".
std::vector<std::string> check_input(const data::GrayImage& image,
                                     int input_size,
                                     const torch::Tensor& reference,
                                     const InputCheckOptions& options = {});

/// Pearson correlation of two images after resizing `image` ([H, W] float)
/// to the reference's size (antialiased bilinear like data::resize_square;
/// a non-square image is squeezed to the reference's shape, as the training
/// images were). NaN when either is constant. ConfigError for an undefined
/// or non-2-d tensor ([1, H, W] is accepted).
double reference_correlation(const torch::Tensor& image,
                             const torch::Tensor& reference);

}  // namespace cxr::infer
