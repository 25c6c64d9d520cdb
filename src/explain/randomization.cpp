// Model randomisation (Adebayo et al. 2018): which modules to destroy, how
// to re-initialise them, and the cascade from the output back to the first
// layer with the rank correlation of the maps after each step.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/explain/trust.h"
#include "cxr/models/layout.h"
#include "internal.h"

namespace cxr::explain {

namespace {

/// A module owning parameters, and whether one of them has >= 2 dims (a
/// convolution or dense layer rather than a normalisation layer).
struct Owner {
  std::string name;
  bool conv = false;   ///< a 4-D weight
  bool layer = false;  ///< a >= 2-D weight
};

/// Modules owning parameters in named_modules (registration) order.
std::vector<Owner> parameter_owners(models::ClassifierImpl& model) {
  auto owner = [](const std::string& name, torch::nn::Module& m) {
    Owner o;
    o.name = name;
    for (const auto& p : m.parameters(/*recurse=*/false)) {
      o.conv = o.conv || p.dim() == 4;
      o.layer = o.layer || p.dim() >= 2;
    }
    return o;
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
  return owners;
}

/// Spearman of two maps with the flat-map convention of ImageTrust.
double map_correlation(const torch::Tensor& a, const torch::Tensor& b) {
  const double c = spearman(a, b);
  if (!std::isnan(c)) return c;
  const bool a_flat = (a.max() == a.min()).item<bool>();
  const bool b_flat = (b.max() == b.min()).item<bool>();
  return a_flat && b_flat ? 1.0 : 0.0;
}

}  // namespace

std::vector<std::string> top_modules(models::ClassifierImpl& model, int count) {
  if (count < 0) {
    throw ConfigError("--randomize-modules " + std::to_string(count) +
                      ": use 0 (head and last convolution) or a count >= 1");
  }
  const auto owners = parameter_owners(model);
  std::vector<std::string> out;
  for (auto it = owners.rbegin(); it != owners.rend(); ++it) {
    out.push_back(it->name);
    if (count > 0 ? static_cast<int>(out.size()) == count : it->conv) break;
  }
  return out;
}

std::vector<std::vector<std::string>> cascade_groups(
    models::ClassifierImpl& model, int max_steps) {
  if (max_steps < 0) {
    throw ConfigError("the cascade needs max_steps >= 0 (0 = no cap)");
  }
  const auto owners = parameter_owners(model);
  // Walking back from the output, a normalisation layer comes before the
  // weight layer it follows in the forward pass: it joins that layer.
  std::vector<std::vector<std::string>> layers;
  std::vector<std::string> pending;
  for (auto it = owners.rbegin(); it != owners.rend(); ++it) {
    pending.push_back(it->name);
    if (it->layer) {
      layers.push_back(std::move(pending));
      pending.clear();
    }
  }
  if (!pending.empty()) {
    // Normalisation in front of the first weight layer (or a model of
    // normalisation layers only): part of the deepest step.
    if (layers.empty()) layers.emplace_back();
    for (auto& name : pending) layers.back().push_back(std::move(name));
  }
  const size_t cap = static_cast<size_t>(max_steps);
  if (max_steps == 0 || layers.size() <= cap) return layers;
  std::vector<std::vector<std::string>> groups = {layers.front()};
  if (cap == 1) {
    for (size_t i = 1; i < layers.size(); ++i) {
      for (auto& n : layers[i]) groups.front().push_back(n);
    }
    return groups;
  }
  // layers[1..] into cap - 1 contiguous groups, sizes differing by <= 1.
  const size_t rest = layers.size() - 1, parts = cap - 1;
  size_t next = 1;
  for (size_t g = 0; g < parts; ++g) {
    const size_t size = rest / parts + (g < rest % parts ? 1 : 0);
    std::vector<std::string> group;
    for (size_t k = 0; k < size; ++k, ++next) {
      for (auto& n : layers[next]) group.push_back(n);
    }
    groups.push_back(std::move(group));
  }
  return groups;
}

void reinitialize_modules(models::ClassifierImpl& model,
                          const std::vector<std::string>& modules,
                          uint64_t seed,
                          bool reset_statistics) {
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
    if (!reset_statistics) continue;
    // Batch norm in eval mode normalises with these: left trained, they
    // would keep the destroyed layer's input scaled as before.
    for (auto& b : m->named_buffers(/*recurse=*/false)) {
      if (b.key() == "running_mean") b.value().zero_();
      if (b.key() == "running_var") b.value().fill_(1.0);
    }
  }
}

bool cascade_decorrelates(const std::vector<double>& curve,
                          double line,
                          double tolerance) {
  if (curve.empty()) return false;
  for (double c : curve) {
    if (!std::isfinite(c)) return false;
  }
  if (!(curve.back() < line)) return false;
  const size_t half = (curve.size() + 1) / 2;
  for (size_t k = curve.size() - half; k < curve.size(); ++k) {
    if (curve[k] > curve.front() + tolerance) return false;
  }
  return true;
}

namespace detail {

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

void randomization_cascade(const models::Classifier& model,
                           infer::GradCam& cam,
                           const Explained& in,
                           const TrustOptions& o,
                           TrustReport& rep) {
  auto groups = cascade_groups(*model, o.cascade_steps);
  if (o.randomize_modules > 0 &&
      groups.size() > static_cast<size_t>(o.randomize_modules)) {
    groups.resize(static_cast<size_t>(o.randomize_modules));
  }
  rep.randomized_modules.clear();
  for (const auto& g : groups) {
    for (const auto& name : g) rep.randomized_modules.push_back(name);
  }
  const int64_t n = in.x.size(0);
  if (n == 0) return;  // e.g. a split without a misclassified image
  const auto saved = models::snapshot(*model);
  try {
    for (size_t step = 0; step < groups.size(); ++step) {
      // Cumulative: each step destroys one more layer going down; its own
      // seed keeps a step's weights independent of how many came before.
      reinitialize_modules(*model, groups[step], o.seed + step,
                           /*reset_statistics=*/true);
      auto random_maps = predicted_maps(cam.compute(in.x), in.pred);
      CascadeStep s;
      s.layer = groups[step].back();
      s.modules = groups[step];
      std::vector<double> signed_c, abs_c;
      for (int64_t i = 0; i < n; ++i) {
        const double c = map_correlation(in.maps[i], random_maps[i]);
        rep.images[static_cast<size_t>(i)].cascade_correlations.push_back(c);
        signed_c.push_back(c);
        abs_c.push_back(std::abs(c));
      }
      s.mean_rank_correlation = nan_mean(signed_c);
      s.mean_abs_rank_correlation = nan_mean(abs_c);
      rep.cascade.push_back(std::move(s));
    }
  } catch (...) {
    models::restore(*model, saved);
    throw;
  }
  models::restore(*model, saved);
  for (auto& im : rep.images)
    im.rank_correlation = im.cascade_correlations.back();
  rep.mean_rank_correlation = rep.cascade.back().mean_rank_correlation;
  std::vector<double> curve;
  for (const auto& s : rep.cascade)
    curve.push_back(s.mean_abs_rank_correlation);
  rep.untrustworthy = !cascade_decorrelates(curve, o.untrustworthy_correlation,
                                            o.cascade_tolerance);
}

}  // namespace detail

}  // namespace cxr::explain
