#pragma once
/// Dataset statistics for `cxr explore`: pixel moments, histograms and
/// exact / near-duplicate detection (perceptual hash) across splits.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cxr/data/dataset.h"

namespace cxr::data {

struct PixelStats {
  double mean = 0;  ///< over all pixels, images in [0, 1]
  double std = 0;
  int64_t images = 0;
};

/// Moments of [N, 1, S, S] uint8 images, computed in float64.
PixelStats pixel_stats(const torch::Tensor& images);

/// Normalised histogram (density over [0,1], `bins` bins) of uint8 images.
std::vector<double> intensity_histogram(const torch::Tensor& images,
                                        int bins = 64);

/// Perceptual fingerprints for near-duplicate search: each image is area-
/// averaged to 24x24, band-passed (minus its 5x5 local mean, so global
/// brightness, contrast and the anatomy every chest X-ray shares drop out)
/// and scaled to zero mean and unit norm. The dot product of two
/// fingerprints is their Pearson correlation. images: [N, 1, S, S] uint8 or
/// float. Returns [N, 576] float32.
///
/// Why not a 64-bit DCT pHash: chest X-rays share their low frequencies, so
/// on cxr-seed the median nearest-neighbour pHash distance was 10 of 64 bits
/// and thousands of unrelated pairs fell under any useful threshold.
torch::Tensor perceptual_fingerprints(const torch::Tensor& images);

struct ImageRef {
  Split split = Split::kTrain;
  int64_t index = 0;
  std::string path;
};

struct DuplicatePair {
  ImageRef a, b;
  std::string kind;         ///< "exact" (identical pixels) or "near"
  double similarity = 1.0;  ///< fingerprint correlation (1 for exact)
  bool cross_split() const { return a.split != b.split; }
};

struct DuplicateOptions {
  /// Pairs whose fingerprint correlation is >= this are near-duplicates.
  /// On cxr-seed, unrelated pairs stay <= 0.91 while re-processed copies
  /// (gamma, contrast, noise, resampling) score >= 0.98.
  double min_similarity = 0.95;
};

struct DuplicateReport {
  std::vector<DuplicatePair> pairs;
  /// Each image's highest similarity to any other image, in the order of
  /// the loaded splits: shows how far ordinary pairs are from the threshold.
  std::vector<double> nearest_similarity;
};

/// All exact and near-duplicate pairs within and across loaded splits.
DuplicateReport find_duplicates(const Dataset& ds,
                                const DuplicateOptions& options);

}  // namespace cxr::data
