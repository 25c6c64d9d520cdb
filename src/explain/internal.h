#pragma once
// Shared by the explain sources only (not installed): the randomisation
// cascade and the JSON helpers of the trust report.
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "cxr/explain/explain.h"
#include "cxr/explain/trust.h"
#include "cxr/infer/gradcam.h"

namespace cxr::explain::detail {

/// NaN-aware JSON number (NaN and infinities as null).
inline nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

inline nlohmann::json nums(const std::vector<double>& v) {
  auto j = nlohmann::json::array();
  for (double x : v) j.push_back(num(x));
  return j;
}

inline nlohmann::json shares_json(const EnergyShares& e) {
  return {{"lung", num(e.lung)}, {"border", num(e.border)}};
}

/// Maps of the predicted class: [N, H, W] (pred [N] bool).
inline torch::Tensor predicted_maps(const infer::CamResult& r,
                                    const torch::Tensor& pred) {
  return torch::where(pred.view({-1, 1, 1}), r.positive_maps, r.negative_maps);
}

/// Mean of the finite values; NaN when there are none.
double nan_mean(const std::vector<double>& v);

/// The images the trust checks judge, as the model explained them.
struct Explained {
  torch::Tensor x;     ///< [N, 1, H, W] float in [0, 1]
  torch::Tensor pred;  ///< [N] bool: positive predicted
  torch::Tensor maps;  ///< [N, H, W] maps of the predicted class
};

/// Runs the randomisation cascade on `in`: fills report.randomized_modules,
/// report.cascade, the images' rank correlations, mean_rank_correlation and
/// untrustworthy. Weights and buffers are restored before returning, also
/// when it throws.
void randomization_cascade(const models::Classifier& model,
                           infer::GradCam& cam,
                           const Explained& in,
                           const TrustOptions& options,
                           TrustReport& report);

/// index.html (and randomisation.png with a trust report) in `out`: the
/// thumbnails linking to the panels, the randomisation curve, the skipped
/// files. `input_size` sets the cards' width.
void write_index(const ExplainResult& r,
                 const std::filesystem::path& out,
                 int input_size);

}  // namespace cxr::explain::detail
