#pragma once
/// Checks of whether Grad-CAM maps can be trusted, for one image set:
///  - model randomisation (Adebayo et al., "Sanity Checks for Saliency
///    Maps", NeurIPS 2018): a cascade that re-initialises the network from
///    the output back to the first layer, one layer at a time, and measures
///    after each step how much the maps changed (Spearman rank correlation).
///    A map that survives the destruction of the weights explains the input,
///    not the model;
///  - faithfulness by deletion (region perturbation, Samek et al., IEEE
///    TNNLS 2017; the deletion metric of Petsiuk et al., BMVC 2018): blank
///    the most highlighted square cells and compare the drop of
///    P(predicted class) with blanking as many cells at random;
///  - where the evidence lies: the share of map mass in the central lung
///    field versus the outer frame, where text, markers and boxes sit (the
///    study found errors driven by cables and a corner box).
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/infer/gradcam.h"
#include "cxr/models/classifier.h"

namespace cxr::explain {

/// Fixed regions in relative image coordinates (0 = left/top, 1 =
/// right/bottom). The lung box is a generous box around both lung fields of
/// a centred PA/AP radiograph (above the diaphragm, inside the ribs); the
/// border is the outer frame where burnt-in text, markers and boxes sit.
struct EnergyRegions {
  double lung_x0 = 0.15, lung_x1 = 0.85;
  double lung_y0 = 0.10, lung_y1 = 0.85;
  /// Width of the border frame as a fraction of each side, in (0, 0.5).
  double border = 0.08;
};

/// Shares of a map's mass; NaN for a map without mass (all zeros).
struct EnergyShares {
  double lung = NAN;    ///< in [0, 1]
  double border = NAN;  ///< in [0, 1]
};

/// [height, width] bool masks of the regions (pixel centres inside).
torch::Tensor lung_field_mask(int64_t height,
                              int64_t width,
                              const EnergyRegions& regions = {});
torch::Tensor border_mask(int64_t height,
                          int64_t width,
                          const EnergyRegions& regions = {});

/// maps: [N, H, W] >= 0 (or [H, W]). Share of each map's sum inside the lung
/// box and inside the border frame. Throws ConfigError for bad regions.
std::vector<EnergyShares> energy_shares(const torch::Tensor& maps,
                                        const EnergyRegions& regions = {});

/// Spearman rank correlation of two equally sized tensors (flattened), ties
/// given their average rank. NaN when either has no spread (constant).
double spearman(const torch::Tensor& a, const torch::Tensor& b);

/// Names (as in named_modules, "" = the root) of the modules the
/// randomisation check re-initialises: modules owning parameters, in
/// named_modules order (registration order, which for cxr models is input to
/// output), counted back from the output. count > 0 takes the last `count`;
/// count == 0 takes the head and the last convolution: walking back from
/// the output, everything up to and including the first module with a 4-D
/// (convolution) weight. Baseline: fc, block4_bn, block4_conv; MobileNetV2:
/// head_logit, head_dense, backbone.Conv_1_bn, backbone.Conv_1. Listed output
/// first.
std::vector<std::string> top_modules(models::ClassifierImpl& model,
                                     int count = 0);

/// Re-initialises the parameters of `modules` (names from top_modules) in
/// place, as at construction: weights with >= 2 dims and the biases next to
/// them from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's default for conv and
/// linear layers), 1-D weights of normalisation layers to 1 and their biases
/// to 0. Buffers are kept unless `reset_statistics`: then the modules'
/// batch-norm running statistics go back to mean 0, variance 1 too (other
/// buffers, such as the model's normalisation constants, are always kept).
/// Seeded: the same seed gives the same weights. Throws ConfigError for an
/// unknown name.
void reinitialize_modules(models::ClassifierImpl& model,
                          const std::vector<std::string>& modules,
                          uint64_t seed,
                          bool reset_statistics = false);

/// The steps of the randomisation cascade, output first: each weight layer
/// (a module owning a parameter with >= 2 dims) together with the
/// normalisation layers (1-D parameters only) registered right after it.
/// Baseline: {fc}, {block4_bn, block4_conv}, ..., {block1_bn, block1_conv}.
/// With more layers than `max_steps` (> 0), the head stays a step of its own
/// and the layers below it are cut into max_steps - 1 contiguous groups of
/// near-equal size (a MobileNetV2 has 53 weight layers). Throws ConfigError
/// for a model without parameters or max_steps < 0.
std::vector<std::vector<std::string>> cascade_groups(
    models::ClassifierImpl& model, int max_steps = 0);

/// The cascade's rule on its curve (mean |Spearman| per step, output
/// first): true when the last point is below `line` and no point of the
/// second half (the last ceil(K/2) steps) is above the first by more than
/// `tolerance`. False for an empty or NaN curve.
bool cascade_decorrelates(const std::vector<double>& mean_abs_curve,
                          double line,
                          double tolerance);

struct TrustOptions {
  /// Grad-CAM layer; "" = the model's default.
  std::string layer;
  /// Steps of the randomisation cascade to run from the output back (see
  /// cascade_groups); 0 = all of them, down to the first layer.
  int randomize_modules = 0;
  /// At most this many cascade steps (layers grouped beyond it; >= 1): each
  /// step is one Grad-CAM pass over the images.
  int cascade_steps = 12;
  /// Adebayo et al. read maps that still correlate after randomisation as
  /// not depending on the model. The cascade passes only if the mean
  /// |Spearman| after its deepest step is below this line, and no step in
  /// the second half of the cascade sits above the first step by more than
  /// cascade_tolerance (the maps must not come back as more layers are
  /// destroyed). 0.5 is a "clearly more alike than not" line: a map that
  /// follows the model falls to about 0 (their Fig. 2), one that follows
  /// the input (edge-detector-like) stays near 1.
  double untrustworthy_correlation = 0.5;
  /// Noise allowed between the first step and the second half (means over
  /// a handful of images).
  double cascade_tolerance = 0.05;
  /// Shares of the cells blanked by the deletion check, each in (0, 1).
  std::vector<double> deletion_fractions = {0.1, 0.2, 0.5};
  /// Side of the square deletion cells in pixels; 0 = max(1, side / 16)
  /// (8 px at 128 px, about a Grad-CAM cell of the baseline's 8x8 map).
  /// Cells, not pixels: a sprinkle of blanked pixels is itself a strong
  /// out-of-distribution signal that swamps the comparison.
  int deletion_cell = 0;
  /// Random-deletion repeats averaged per image (>= 1).
  int random_repeats = 3;
  /// Seed of re-initialisation and random deletion.
  uint64_t seed = 42;
  /// Decision threshold on P(positive) that defines the predicted class.
  double threshold = 0.5;
  /// Images per forward pass.
  int batch_size = 8;
  EnergyRegions regions;

  /// Throws ConfigError naming the bad option.
  void validate() const;
};

/// The checks for one image. Maps are those of the predicted class.
struct ImageTrust {
  double probability = NAN;  ///< P(positive)
  int predicted = 0;         ///< 1 = positive
  int label = -1;            ///< 1 / 0, -1 when unknown
  /// Spearman between the map before and after the whole randomisation
  /// cascade. When exactly one of the two maps is constant (no ranking) it
  /// is 0 (the maps differ as much as they can), when both are it is 1.
  double rank_correlation = NAN;
  /// The same after each cascade step (output first).
  std::vector<double> cascade_correlations;
  /// Drop of P(predicted class), per deletion fraction: P before minus P
  /// after. Guided = cells with the highest mean map value first; random =
  /// as many cells in random order (mean over repeats). Blanked cells take
  /// the image's mean. Negative when blanking raises P(predicted class).
  std::vector<double> drop_guided, drop_random;
  EnergyShares energy;  ///< of the predicted-class map
};

/// One step of the randomisation cascade: everything from the output down
/// to `layer` re-initialised.
struct CascadeStep {
  std::string layer;  ///< the deepest module re-initialised so far
  std::vector<std::string> modules;        ///< re-initialised in this step
  double mean_rank_correlation = NAN;      ///< signed, mean over images
  double mean_abs_rank_correlation = NAN;  ///< |Spearman|, mean over images
};

struct TrustReport {
  std::string layer;
  /// All modules the cascade re-initialised, output first.
  std::vector<std::string> randomized_modules;
  /// The curve: one entry per step, output first.
  std::vector<CascadeStep> cascade;
  double cascade_tolerance = 0.05;
  std::vector<double> deletion_fractions;
  int random_repeats = 1;
  int deletion_cell = 1;  ///< cell side in pixels
  double untrustworthy_correlation = 0.5;
  EnergyRegions regions;
  /// After the deepest step (the last point of the curve), signed.
  double mean_rank_correlation = NAN;
  /// The cascade's rule failed (see TrustOptions::untrustworthy_correlation);
  /// false without images.
  bool untrustworthy = false;
  /// Means over images per fraction; guided > random means the map points at
  /// pixels the model relies on.
  std::vector<double> mean_drop_guided, mean_drop_random;
  /// Means over images whose map has mass; correct/wrong only with labels.
  EnergyShares mean_energy, mean_energy_correct, mean_energy_wrong;
  std::vector<ImageTrust> images;  ///< in input order

  /// Summary, definitions (regions, shares a uniform map would get) and the
  /// per-image values. NaN is written as null.
  nlohmann::json to_json() const;
};

/// Runs the three checks on images [N, 1, H, W] (uint8 in [0, 255] or
/// float in [0, 1]) with labels [N] (1 = positive; undefined when unknown).
/// `cams` may hold this model's maps of these images on options.layer to
/// skip recomputing them. The randomisation cascade re-initialises
/// `model` in place and restores weights and buffers before returning,
/// also when it throws, so the model must not be used concurrently.
/// No images give a report without per-image values and NaN means.
/// Throws ConfigError for bad options or shapes.
TrustReport trust_checks(const models::Classifier& model,
                         const torch::Tensor& images,
                         const torch::Tensor& labels,
                         const TrustOptions& options = {},
                         const infer::CamResult* cams = nullptr);

}  // namespace cxr::explain
