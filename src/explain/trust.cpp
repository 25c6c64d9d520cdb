// The trust checks of Grad-CAM maps (randomisation, deletion, energy).
// Only tensors and models here; files and figures live in explain.cpp.
#include "cxr/explain/trust.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/common/vectors.h"
#include "cxr/models/layout.h"

namespace cxr::explain {

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

double nan_mean(const std::vector<double>& v) {
  double s = 0;
  int64_t n = 0;
  for (double x : v) {
    if (std::isfinite(x)) {
      s += x;
      ++n;
    }
  }
  return n ? s / static_cast<double>(n) : NAN;
}

/// Maps of the predicted class: [N, H, W].
torch::Tensor predicted_maps(const CamResult& r, const torch::Tensor& pred) {
  return torch::where(pred.view({-1, 1, 1}), r.positive_maps, r.negative_maps);
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

nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

nlohmann::json nums(const std::vector<double>& v) {
  auto j = nlohmann::json::array();
  for (double x : v) j.push_back(num(x));
  return j;
}

nlohmann::json shares_json(const EnergyShares& e) {
  return {{"lung", num(e.lung)}, {"border", num(e.border)}};
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

std::vector<std::string> top_modules(models::ClassifierImpl& model, int count) {
  if (count < 0) {
    throw ConfigError("--randomize-modules " + std::to_string(count) +
                      ": use 0 (head and last convolution) or a count >= 1");
  }
  struct Owner {
    std::string name;
    bool conv;
  };
  auto owner = [](const std::string& name, torch::nn::Module& m) {
    bool conv = false;
    for (const auto& p : m.parameters(/*recurse=*/false)) {
      conv = conv || p.dim() == 4;
    }
    return Owner{name, conv};
  };
  std::vector<Owner> owners;
  if (!model.parameters(/*recurse=*/false).empty()) {
    owners.push_back(owner("", model));
  }
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    if (!item.value()->parameters(/*recurse=*/false).empty()) {
      owners.push_back(owner(item.key(), *item.value()));
    }
  }
  if (owners.empty()) {
    throw ConfigError("the model has no parameters to randomise");
  }
  std::vector<std::string> out;
  for (auto it = owners.rbegin(); it != owners.rend(); ++it) {
    out.push_back(it->name);
    if (count > 0 ? static_cast<int>(out.size()) == count : it->conv) break;
  }
  return out;
}

void reinitialize_modules(models::ClassifierImpl& model,
                          const std::vector<std::string>& modules,
                          uint64_t seed) {
  auto all = model.named_modules("", /*include_self=*/false);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::NoGradGuard no_grad;
  for (const auto& name : modules) {
    torch::nn::Module* m = &model;
    if (!name.empty()) {
      const auto* found = all.find(name);
      if (!found) {
        throw ConfigError("cannot randomise module '" + name +
                          "': the model has no such module");
      }
      m = found->get();
    }
    auto params = m->named_parameters(/*recurse=*/false);
    int64_t fan_in = 0;
    for (const auto& p : params) {
      if (p.value().dim() >= 2) {
        fan_in = p.value().numel() / p.value().size(0);
        break;
      }
    }
    for (auto& p : params) {
      auto& t = p.value();
      torch::Tensor fresh;
      if (fan_in > 0) {
        const int64_t fi = t.dim() >= 2 ? t.numel() / t.size(0) : fan_in;
        const double bound = 1.0 / std::sqrt(static_cast<double>(fi));
        fresh =
            (torch::rand(t.sizes(), gen, torch::kFloat64) * 2.0 - 1.0) * bound;
      } else {
        // Normalisation layers: scale 1, shift 0, as constructed.
        fresh = p.key() == "weight" ? torch::ones(t.sizes(), torch::kFloat64)
                                    : torch::zeros(t.sizes(), torch::kFloat64);
      }
      t.copy_(fresh.to(t.device(), t.scalar_type()));
    }
  }
}

void TrustOptions::validate() const {
  if (randomize_modules < 0) {
    throw ConfigError("--randomize-modules must be >= 0 (0 = automatic)");
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

  TrustReport rep;
  rep.layer = cam.layer();
  rep.deletion_fractions = o.deletion_fractions;
  rep.untrustworthy_correlation = o.untrustworthy_correlation;
  rep.regions = o.regions;
  rep.random_repeats = o.random_repeats;
  rep.deletion_cell = static_cast<int>(cell);
  rep.images.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto& r = rep.images[static_cast<size_t>(i)];
    r.probability = prob[i].item<double>();
    r.predicted = pred[i].item<bool>() ? 1 : 0;
    if (labels.defined()) r.label = labels[i].item<double>() > 0.5 ? 1 : 0;
  }

  // Model randomisation: top modules re-initialised in place, weights
  // restored afterwards (also when computing the maps throws).
  rep.randomized_modules = top_modules(*model, o.randomize_modules);
  if (n == 0) return rep;  // e.g. a split without a misclassified image
  CamResult random_cams;
  {
    const auto saved = models::snapshot(*model);
    try {
      reinitialize_modules(*model, rep.randomized_modules, o.seed);
      random_cams = cam.compute(x);
    } catch (...) {
      models::restore(*model, saved);
      throw;
    }
    models::restore(*model, saved);
  }
  auto random_maps = predicted_maps(random_cams, pred);
  std::vector<double> correlations;
  for (int64_t i = 0; i < n; ++i) {
    double c = spearman(maps[i], random_maps[i]);
    if (std::isnan(c)) {
      const bool a_flat = (maps[i].max() == maps[i].min()).item<bool>();
      const bool b_flat =
          (random_maps[i].max() == random_maps[i].min()).item<bool>();
      c = a_flat && b_flat ? 1.0 : 0.0;
    }
    rep.images[static_cast<size_t>(i)].rank_correlation = c;
    correlations.push_back(c);
  }
  rep.mean_rank_correlation = nan_mean(correlations);
  rep.untrustworthy = rep.mean_rank_correlation > o.untrustworthy_correlation;

  // Deletion by regions (Samek et al.'s region perturbation): square cells
  // ranked by their mean map value vs cells in random order. Scattered
  // single pixels would not do: on real radiographs blanking 10 % random
  // pixels swings a trained baseline to P(COVID) ~ 1 by itself (the noise is
  // the signal), so the random baseline would measure that, not the map.
  // Ties in the map (large zero areas) are broken at random, so guided
  // deletion never degenerates into a raster scan.
  const int64_t gh = (h + cell - 1) / cell, gw = (w + cell - 1) / cell;
  const int64_t cells = gh * gw;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + 1);
  auto fill = x.mean({1, 2, 3}).view({n, 1, 1, 1});
  // Partial cells at the right/bottom edge average over their own pixels.
  auto cell_scores =
      torch::avg_pool2d(maps.unsqueeze(1), {cell, cell}, {cell, cell},
                        /*padding=*/0, /*ceil_mode=*/true)
          .reshape({n, cells});
  auto shuffle = std::get<1>(torch::rand({n, cells}, gen).sort(1));
  auto by_map =
      std::get<1>(cell_scores.gather(1, shuffle)
                      .sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  auto guided_order = shuffle.gather(1, by_map);
  std::vector<torch::Tensor> random_orders;
  for (int r = 0; r < o.random_repeats; ++r) {
    random_orders.push_back(std::get<1>(torch::rand({n, cells}, gen).sort(1)));
  }
  auto p_pred = [&](const torch::Tensor& p) {
    return torch::where(pred, p.to(torch::kFloat64),
                        1.0 - p.to(torch::kFloat64));
  };
  const auto before = p_pred(prob);
  auto drop_after = [&](const torch::Tensor& order, int64_t k) {
    auto chosen = torch::zeros({n, cells}, torch::kBool)
                      .scatter_(1, order.slice(1, 0, k), true)
                      .view({n, gh, gw})
                      .repeat_interleave(cell, 1)
                      .repeat_interleave(cell, 2)
                      .slice(1, 0, h)
                      .slice(2, 0, w)
                      .unsqueeze(1);
    auto blanked = torch::where(chosen, fill, x);
    auto p = probabilities(*model, blanked, o.batch_size);
    return before - p_pred(p);
  };
  for (double f : o.deletion_fractions) {
    const int64_t k = std::max<int64_t>(
        1, static_cast<int64_t>(std::llround(f * static_cast<double>(cells))));
    auto guided = drop_after(guided_order, k);
    auto random = torch::zeros({n}, torch::kFloat64);
    for (const auto& order : random_orders) random += drop_after(order, k);
    random /= static_cast<double>(o.random_repeats);
    std::vector<double> g, rnd;
    for (int64_t i = 0; i < n; ++i) {
      auto& r = rep.images[static_cast<size_t>(i)];
      r.drop_guided.push_back(guided[i].item<double>());
      r.drop_random.push_back(random[i].item<double>());
      g.push_back(r.drop_guided.back());
      rnd.push_back(r.drop_random.back());
    }
    rep.mean_drop_guided.push_back(nan_mean(g));
    rep.mean_drop_random.push_back(nan_mean(rnd));
  }

  // Where the evidence lies.
  auto shares = energy_shares(maps, o.regions);
  std::vector<double> lung, border, lung_ok, border_ok, lung_bad, border_bad;
  for (int64_t i = 0; i < n; ++i) {
    auto& r = rep.images[static_cast<size_t>(i)];
    r.energy = shares[static_cast<size_t>(i)];
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
  return rep;
}

nlohmann::json TrustReport::to_json() const {
  const auto& r = regions;
  nlohmann::json j;
  j["layer"] = layer;
  j["randomization"] = {
      {"method",
       "Adebayo et al. 2018: re-initialise the top modules, Spearman rank "
       "correlation of the predicted-class map before and after"},
      {"modules", randomized_modules},
      {"mean_rank_correlation", num(mean_rank_correlation)},
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
    nlohmann::json e = {{"p_positive", num(im.probability)},
                        {"predicted", im.predicted},
                        {"rank_correlation", num(im.rank_correlation)},
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
