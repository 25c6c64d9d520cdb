// The trust checks of Grad-CAM maps (randomisation, deletion, energy).
// Only tensors and models here; files and figures live in explain.cpp.
#include "cxr/explain/trust.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/common/vectors.h"
#include "cxr/models/layout.h"
#include "internal.h"

namespace cxr::explain {

using detail::nan_mean;
using detail::num;
using detail::nums;
using detail::predicted_maps;
using detail::shares_json;
using infer::as_unit_float;
using infer::CamResult;
using infer::GradCam;
using infer::model_device;

namespace {

void check_regions(const EnergyRegions& r) {
  auto in01 = [](double v) { return v >= 0.0 && v <= 1.0; };
  if (!(in01(r.lung_x0) && in01(r.lung_x1) && r.lung_x0 < r.lung_x1 &&
        in01(r.lung_y0) && in01(r.lung_y1) && r.lung_y0 < r.lung_y1)) {
    throw ConfigError(
        "energy regions: the lung box must satisfy 0 <= x0 < x1 "
        "<= 1 and 0 <= y0 < y1 <= 1");
  }
  if (!(r.border > 0.0 && r.border < 0.5)) {
    throw ConfigError("energy regions: the border width must be in (0, 0.5)");
  }
}

/// Relative pixel-centre coordinates of `n` pixels.
torch::Tensor centres(int64_t n) {
  return (torch::arange(n, torch::kFloat64) + 0.5) / static_cast<double>(n);
}

/// Average ranks (0-based) of a 1-D tensor; ties share their mean rank.
torch::Tensor average_ranks(const torch::Tensor& v) {
  auto sorted = v.sort();
  const auto& values = std::get<0>(sorted);
  const auto& order = std::get<1>(sorted);
  auto groups = torch::unique_consecutive(values, /*return_inverse=*/true,
                                          /*return_counts=*/true);
  const auto& inverse = std::get<1>(groups);
  auto counts = std::get<2>(groups).to(torch::kFloat64);
  auto ends = counts.cumsum(0);
  auto mean_rank = ends - (counts + 1.0) / 2.0;
  auto ranks = torch::empty({v.numel()}, torch::kFloat64);
  ranks.scatter_(0, order, mean_rank.index_select(0, inverse));
  return ranks;
}

/// P(positive) of float images [N, 1, H, W], no graph, batched.
torch::Tensor probabilities(models::ClassifierImpl& model,
                            const torch::Tensor& x,
                            int batch_size) {
  torch::NoGradGuard no_grad;
  models::EvalModeGuard mode(model);
  const auto device = model_device(model);
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < x.size(0); s += batch_size) {
    auto b = x.slice(0, s, std::min(x.size(0), s + batch_size)).to(device);
    out.push_back(torch::sigmoid(model.forward(b)).to(torch::kFloat32).cpu());
  }
  return torch::cat(out);
}

}  // namespace

torch::Tensor lung_field_mask(int64_t height,
                              int64_t width,
                              const EnergyRegions& r) {
  check_regions(r);
  auto xs = centres(width), ys = centres(height);
  auto mx = (xs >= r.lung_x0) & (xs <= r.lung_x1);
  auto my = (ys >= r.lung_y0) & (ys <= r.lung_y1);
  return my.unsqueeze(1) & mx.unsqueeze(0);
}

torch::Tensor border_mask(int64_t height,
                          int64_t width,
                          const EnergyRegions& r) {
  check_regions(r);
  auto xs = centres(width), ys = centres(height);
  auto bx = (xs < r.border) | (xs > 1.0 - r.border);
  auto by = (ys < r.border) | (ys > 1.0 - r.border);
  return by.unsqueeze(1) | bx.unsqueeze(0);
}

std::vector<EnergyShares> energy_shares(const torch::Tensor& maps,
                                        const EnergyRegions& regions) {
  if (!maps.defined() || (maps.dim() != 2 && maps.dim() != 3)) {
    throw ConfigError("energy shares need maps [N, H, W] or [H, W], got " +
                      shape_of(maps));
  }
  auto m =
      (maps.dim() == 2 ? maps.unsqueeze(0) : maps).to(torch::kFloat64).cpu();
  if (m.numel() > 0 && m.min().item<double>() < 0) {
    throw ConfigError("energy shares need non-negative maps");
  }
  const int64_t h = m.size(1), w = m.size(2);
  auto lung = lung_field_mask(h, w, regions).to(torch::kFloat64);
  auto border = border_mask(h, w, regions).to(torch::kFloat64);
  auto total = m.sum({1, 2});
  auto in_lung = (m * lung).sum({1, 2});
  auto in_border = (m * border).sum({1, 2});
  std::vector<EnergyShares> out(static_cast<size_t>(m.size(0)));
  for (int64_t i = 0; i < m.size(0); ++i) {
    const double t = total[i].item<double>();
    if (t > 0) {
      out[static_cast<size_t>(i)] = {in_lung[i].item<double>() / t,
                                     in_border[i].item<double>() / t};
    }
  }
  return out;
}

double spearman(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.defined() || !b.defined() || a.numel() != b.numel()) {
    throw ConfigError(
        "spearman: inputs must have the same number of "
        "elements, got " +
        shape_of(a) + " and " + shape_of(b));
  }
  if (a.numel() < 2) return NAN;
  auto ra = average_ranks(a.flatten().to(torch::kFloat64).cpu());
  auto rb = average_ranks(b.flatten().to(torch::kFloat64).cpu());
  ra = ra - ra.mean();
  rb = rb - rb.mean();
  const double va = ra.pow(2).sum().item<double>();
  const double vb = rb.pow(2).sum().item<double>();
  if (va <= 0 || vb <= 0) return NAN;
  return (ra * rb).sum().item<double>() / std::sqrt(va * vb);
}

void TrustOptions::validate() const {
  if (randomize_modules < 0) {
    throw ConfigError(
        "--randomize-modules must be >= 0 (0 = the whole cascade, down to "
        "the first layer)");
  }
  if (cascade_steps < 1) {
    throw ConfigError("the randomisation cascade needs >= 1 step");
  }
  if (!(cascade_tolerance >= 0 && cascade_tolerance < 1)) {
    throw ConfigError("the cascade tolerance must be in [0, 1)");
  }
  if (!(untrustworthy_correlation >= -1 && untrustworthy_correlation <= 1)) {
    throw ConfigError(
        "the untrustworthy rank-correlation line must be in "
        "[-1, 1]");
  }
  if (deletion_fractions.empty()) {
    throw ConfigError("give at least one deletion fraction");
  }
  for (double f : deletion_fractions) {
    if (!(f > 0 && f < 1)) {
      throw ConfigError("deletion fraction " + std::to_string(f) +
                        " must be in (0, 1)");
    }
  }
  if (random_repeats < 1) throw ConfigError("random repeats must be >= 1");
  if (deletion_cell < 0) {
    throw ConfigError("the deletion cell size must be >= 0 (0 = side / 16)");
  }
  if (!(threshold >= 0 && threshold <= 1)) {
    throw ConfigError("--threshold must be in [0, 1]");
  }
  if (batch_size < 1) throw ConfigError("--batch-size must be >= 1");
  check_regions(regions);
}

namespace {

/// Deletion by regions (Samek et al.'s region perturbation): square cells
/// ranked by their mean map value vs cells in random order. Scattered single
/// pixels would not do: on real radiographs blanking 10 % random pixels
/// swings a trained baseline to P(COVID) ~ 1 by itself (the noise is the
/// signal), so the random baseline would measure that, not the map. Ties in
/// the map (large zero areas) are broken at random, so guided deletion never
/// degenerates into a raster scan.
class Deletion {
 public:
  Deletion(const models::Classifier& model,
           const torch::Tensor& x,
           const torch::Tensor& maps,
           const torch::Tensor& pred,
           const torch::Tensor& prob,
           int64_t cell,
           const TrustOptions& o)
      : model_(model),
        x_(x),
        pred_(pred),
        cell_(cell),
        o_(o),
        n_(x.size(0)),
        h_(x.size(2)),
        w_(x.size(3)),
        gh_((h_ + cell - 1) / cell),
        gw_((w_ + cell - 1) / cell),
        cells_(gh_ * gw_),
        fill_(x.mean({1, 2, 3}).view({n_, 1, 1, 1})),
        before_(p_pred(prob)) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 1);
    // Partial cells at the right/bottom edge average over their own pixels.
    auto cell_scores =
        torch::avg_pool2d(maps.unsqueeze(1), {cell, cell}, {cell, cell},
                          /*padding=*/0, /*ceil_mode=*/true)
            .reshape({n_, cells_});
    auto shuffle = std::get<1>(torch::rand({n_, cells_}, gen).sort(1));
    auto by_map =
        std::get<1>(cell_scores.gather(1, shuffle)
                        .sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
    guided_order_ = shuffle.gather(1, by_map);
    for (int r = 0; r < o.random_repeats; ++r) {
      random_orders_.push_back(
          std::get<1>(torch::rand({n_, cells_}, gen).sort(1)));
    }
  }

  /// Adds the drops for one fraction to the report.
  void run(double fraction, TrustReport& rep) const {
    const int64_t k = std::max<int64_t>(
        1, static_cast<int64_t>(
               std::llround(fraction * static_cast<double>(cells_))));
    auto guided = drop_after(guided_order_, k);
    auto random = torch::zeros({n_}, torch::kFloat64);
    for (const auto& order : random_orders_) random += drop_after(order, k);
    random /= static_cast<double>(o_.random_repeats);
    std::vector<double> g, rnd;
    for (int64_t i = 0; i < n_; ++i) {
      auto& r = rep.images[static_cast<size_t>(i)];
      r.drop_guided.push_back(guided[i].item<double>());
      r.drop_random.push_back(random[i].item<double>());
      g.push_back(r.drop_guided.back());
      rnd.push_back(r.drop_random.back());
    }
    rep.mean_drop_guided.push_back(nan_mean(g));
    rep.mean_drop_random.push_back(nan_mean(rnd));
  }

 private:
  torch::Tensor p_pred(const torch::Tensor& p) const {
    return torch::where(pred_, p.to(torch::kFloat64),
                        1.0 - p.to(torch::kFloat64));
  }

  torch::Tensor drop_after(const torch::Tensor& order, int64_t k) const {
    auto chosen = torch::zeros({n_, cells_}, torch::kBool)
                      .scatter_(1, order.slice(1, 0, k), true)
                      .view({n_, gh_, gw_})
                      .repeat_interleave(cell_, 1)
                      .repeat_interleave(cell_, 2)
                      .slice(1, 0, h_)
                      .slice(2, 0, w_)
                      .unsqueeze(1);
    auto blanked = torch::where(chosen, fill_, x_);
    auto p = probabilities(*model_, blanked, o_.batch_size);
    return before_ - p_pred(p);
  }

  const models::Classifier& model_;
  const torch::Tensor& x_;
  const torch::Tensor& pred_;
  const int64_t cell_;
  const TrustOptions& o_;
  const int64_t n_, h_, w_, gh_, gw_, cells_;
  const torch::Tensor fill_, before_;
  torch::Tensor guided_order_;
  std::vector<torch::Tensor> random_orders_;
};

/// Where the evidence lies: the maps' shares in the lung box and the border
/// frame, per image and averaged (all, correct, wrong).
void energy_check(const torch::Tensor& maps,
                  const EnergyRegions& regions,
                  TrustReport& rep) {
  auto shares = energy_shares(maps, regions);
  std::vector<double> lung, border, lung_ok, border_ok, lung_bad, border_bad;
  for (size_t i = 0; i < rep.images.size(); ++i) {
    auto& r = rep.images[i];
    r.energy = shares[i];
    lung.push_back(r.energy.lung);
    border.push_back(r.energy.border);
    if (r.label >= 0) {
      auto& l = r.label == r.predicted ? lung_ok : lung_bad;
      auto& b = r.label == r.predicted ? border_ok : border_bad;
      l.push_back(r.energy.lung);
      b.push_back(r.energy.border);
    }
  }
  rep.mean_energy = {nan_mean(lung), nan_mean(border)};
  rep.mean_energy_correct = {nan_mean(lung_ok), nan_mean(border_ok)};
  rep.mean_energy_wrong = {nan_mean(lung_bad), nan_mean(border_bad)};
}

/// The report's settings and each image's prediction and label.
TrustReport start_report(const std::string& layer,
                         const torch::Tensor& prob,
                         const torch::Tensor& pred,
                         const torch::Tensor& labels,
                         int64_t cell,
                         const TrustOptions& o) {
  TrustReport rep;
  rep.layer = layer;
  rep.deletion_fractions = o.deletion_fractions;
  rep.untrustworthy_correlation = o.untrustworthy_correlation;
  rep.cascade_tolerance = o.cascade_tolerance;
  rep.regions = o.regions;
  rep.random_repeats = o.random_repeats;
  rep.deletion_cell = static_cast<int>(cell);
  const int64_t n = prob.size(0);
  rep.images.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto& r = rep.images[static_cast<size_t>(i)];
    r.probability = prob[i].item<double>();
    r.predicted = pred[i].item<bool>() ? 1 : 0;
    if (labels.defined()) r.label = labels[i].item<double>() > 0.5 ? 1 : 0;
  }
  return rep;
}

}  // namespace

TrustReport trust_checks(const models::Classifier& model,
                         const torch::Tensor& images,
                         const torch::Tensor& labels,
                         const TrustOptions& o,
                         const CamResult* cams) {
  o.validate();
  auto x = as_unit_float(images, "trust checks").cpu();
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const int64_t cell = o.deletion_cell > 0
                           ? o.deletion_cell
                           : std::max<int64_t>(1, std::min(h, w) / 16);
  if (labels.defined() && labels.numel() != n) {
    throw ConfigError("trust checks: " + std::to_string(labels.numel()) +
                      " labels for " + std::to_string(n) + " images");
  }
  GradCam cam(model, o.layer, o.batch_size);
  CamResult base = cams ? *cams : cam.compute(x);
  if (base.positive_maps.dim() != 3 || base.positive_maps.size(0) != n ||
      base.positive_maps.size(1) != h || base.positive_maps.size(2) != w) {
    throw ConfigError("trust checks: the given maps " +
                      shape_of(base.positive_maps) + " do not match " +
                      std::to_string(n) + " images of " + std::to_string(h) +
                      "x" + std::to_string(w) + " px");
  }
  auto prob = base.probabilities.to(torch::kFloat64).cpu();
  auto pred = prob >= o.threshold;
  auto maps = predicted_maps(base, pred);
  TrustReport rep = start_report(cam.layer(), prob, pred, labels, cell, o);
  detail::randomization_cascade(model, cam, {x, pred, maps}, o, rep);
  if (n == 0) return rep;  // e.g. a split without a misclassified image
  const Deletion deletion(model, x, maps, pred, prob, cell, o);
  for (double f : o.deletion_fractions) deletion.run(f, rep);
  energy_check(maps, o.regions, rep);
  return rep;
}

nlohmann::json TrustReport::to_json() const {
  const auto& r = regions;
  nlohmann::json j;
  j["layer"] = layer;
  auto steps = nlohmann::json::array();
  for (const auto& s : cascade) {
    steps.push_back(
        {{"layer", s.layer},
         {"modules", s.modules},
         {"mean_rank_correlation", num(s.mean_rank_correlation)},
         {"mean_abs_rank_correlation", num(s.mean_abs_rank_correlation)}});
  }
  j["randomization"] = {
      {"method",
       "Adebayo et al. 2018, cascading: re-initialise the network from the "
       "output back to the first layer (weights and batch-norm statistics), "
       "cumulatively; after each step the Spearman rank correlation of the "
       "predicted-class map with the original one"},
      {"rule",
       "passes when the mean |rank correlation| after the deepest step is "
       "below untrustworthy_above and no step of the second half of the "
       "cascade is above the first step by more than tolerance"},
      {"modules", randomized_modules},
      {"cascade", steps},
      {"tolerance", cascade_tolerance},
      {"mean_rank_correlation", num(mean_rank_correlation)},
      {"mean_abs_rank_correlation",
       num(cascade.empty() ? NAN : cascade.back().mean_abs_rank_correlation)},
      {"untrustworthy_above", untrustworthy_correlation},
      {"untrustworthy", untrustworthy}};
  j["deletion"] = {
      {"method",
       "blank the top fraction of square cells by the mean of the "
       "predicted-class map (ties at random) with the image mean vs as many "
       "cells in random order; drop of P(predicted class)"},
      {"fractions", deletion_fractions},
      {"cell_pixels", deletion_cell},
      {"random_repeats", random_repeats},
      {"mean_drop_guided", nums(mean_drop_guided)},
      {"mean_drop_random", nums(mean_drop_random)}};
  j["energy"] = {
      {"regions",
       {{"lung_box",
         {{"x", {r.lung_x0, r.lung_x1}}, {"y", {r.lung_y0, r.lung_y1}}}},
        {"border_frame", r.border}}},
      {"uniform_map",
       shares_json({(r.lung_x1 - r.lung_x0) * (r.lung_y1 - r.lung_y0),
                    1.0 - (1.0 - 2.0 * r.border) * (1.0 - 2.0 * r.border)})},
      {"mean", shares_json(mean_energy)},
      {"correct", shares_json(mean_energy_correct)},
      {"wrong", shares_json(mean_energy_wrong)}};
  auto imgs = nlohmann::json::array();
  for (const auto& im : images) {
    nlohmann::json e = {
        {"p_positive", num(im.probability)},
        {"predicted", im.predicted},
        {"rank_correlation", num(im.rank_correlation)},
        {"cascade_rank_correlations", nums(im.cascade_correlations)},
        {"drop_guided", nums(im.drop_guided)},
        {"drop_random", nums(im.drop_random)},
        {"energy", shares_json(im.energy)}};
    e["label"] = im.label >= 0 ? nlohmann::json(im.label) : nlohmann::json();
    imgs.push_back(e);
  }
  j["images"] = imgs;
  return j;
}

}  // namespace cxr::explain
