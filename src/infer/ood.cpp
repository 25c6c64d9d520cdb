#include "cxr/infer/ood.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/metrics/metrics.h"
#include "cxr/models/weights_file.h"

namespace fs = std::filesystem;

namespace cxr::infer {

void OodOptions::validate() const {
  if (!(false_flag_rate > 0 && false_flag_rate <= 0.5)) {
    throw ConfigError("--ood-false-flag-rate " +
                      std::to_string(false_flag_rate) +
                      " is not in (0, 0.5]; e.g. 0.05");
  }
  if (layers < 1 || layers > 16) {
    throw ConfigError("--ood-layers must be in 1..16, e.g. 4");
  }
  if (!(shrinkage >= 0 && shrinkage <= 1)) {
    throw ConfigError("OOD shrinkage must be in [0, 1]");
  }
  if (combine != "mean" && combine != "max") {
    throw ConfigError("--ood-combine " + combine + ": use mean or max");
  }
}

double score_quantile(const torch::Tensor& values, double q) {
  if (values.numel() == 0) return NAN;
  auto v = std::get<0>(values.to(torch::kFloat64).flatten().sort());
  const double pos = q * static_cast<double>(v.numel() - 1);
  const auto lo = static_cast<int64_t>(std::floor(pos));
  const auto hi = std::min<int64_t>(lo + 1, v.numel() - 1);
  const double w = pos - static_cast<double>(lo);
  return v[lo].item<double>() * (1 - w) + v[hi].item<double>() * w;
}

std::vector<std::string> OodDetector::choose_layers(
    const models::ClassifierImpl& model, int count) {
  const auto names = model.tap_names();
  std::vector<std::string> pool;
  // Post-activation maps where the model has them (relu / relu6 outputs).
  for (const auto& n : names) {
    if (n.find("relu") != std::string::npos) pool.push_back(n);
  }
  if (static_cast<int>(pool.size()) < count) pool = names;
  std::vector<std::string> out;
  if (pool.empty() || count < 1) return out;
  const int n = static_cast<int>(pool.size());
  const int m = std::min(count, n);
  // Evenly spaced from early to the last layer, then made distinct (a
  // small model can round two picks onto one layer).
  std::vector<int> idx(static_cast<size_t>(m));
  for (int k = 0; k < m; ++k) {
    idx[static_cast<size_t>(k)] =
        static_cast<int>(std::lround(static_cast<double>(k + 1) / m * (n - 1)));
  }
  for (int k = m - 2; k >= 0; --k) {
    idx[static_cast<size_t>(k)] = std::min(idx[static_cast<size_t>(k)],
                                           idx[static_cast<size_t>(k + 1)] - 1);
  }
  for (int k = 0; k < m; ++k) {
    idx[static_cast<size_t>(k)] =
        std::max(idx[static_cast<size_t>(k)],
                 k == 0 ? 0 : idx[static_cast<size_t>(k - 1)] + 1);
    out.push_back(pool[static_cast<size_t>(idx[static_cast<size_t>(k)])]);
  }
  return out;
}

namespace {

// Squared Mahalanobis distance of each row to the nearest class mean.
torch::Tensor min_distance(const LayerGaussian& g, const torch::Tensor& x) {
  if (g.whiten.defined()) {
    auto y = x.to(torch::kFloat32).matmul(g.whiten);
    torch::Tensor best;
    for (int64_t c = 0; c < g.means_whitened.size(0); ++c) {
      auto m = (y - g.means_whitened[c]).pow(2).sum(1);
      best = best.defined() ? torch::minimum(best, m) : m;
    }
    return best.to(torch::kFloat64);
  }
  auto f = x.to(torch::kFloat64);
  torch::Tensor best;
  for (int64_t c = 0; c < g.means.size(0); ++c) {
    auto d = f - g.means[c];
    auto m = (d.matmul(g.precision) * d).sum(1);
    best = best.defined() ? torch::minimum(best, m) : m;
  }
  return best;
}

}  // namespace

void LayerGaussian::prepare() {
  whiten = torch::Tensor();
  means_whitened = torch::Tensor();
  try {
    const auto l = torch::linalg::cholesky(precision.to(torch::kFloat64));
    means_whitened = means.to(torch::kFloat64).matmul(l).to(torch::kFloat32);
    whiten = l.to(torch::kFloat32).contiguous();
  } catch (const c10::Error&) {
    // Not positive definite in float64 rounding: score in float64 with the
    // precision matrix itself.
    whiten = torch::Tensor();
    means_whitened = torch::Tensor();
  }
}

OodDetector OodDetector::fit(const std::vector<std::string>& layer_names,
                             const std::vector<torch::Tensor>& features,
                             const torch::Tensor& labels,
                             const OodOptions& o) {
  if (!(o.shrinkage >= 0 && o.shrinkage <= 1)) {
    throw ConfigError("OOD shrinkage must be in [0, 1]");
  }
  if (layer_names.size() != features.size() || features.empty()) {
    throw ConfigError("OOD detector: one feature matrix per layer needed");
  }
  OodDetector det;
  det.false_flag_rate = o.false_flag_rate;
  if (o.combine != "mean" && o.combine != "max") {
    throw ConfigError("--ood-combine must be mean or max");
  }
  det.combine = o.combine;
  auto y = labels.to(torch::kLong).flatten();
  for (size_t k = 0; k < features.size(); ++k) {
    auto x = features[k].to(torch::kFloat64);
    if (x.size(0) != y.size(0) || x.size(0) < 2) {
      throw DataError("OOD detector: need >= 2 training images with labels");
    }
    LayerGaussian g;
    g.layer = layer_names[k];
    std::vector<torch::Tensor> means;
    auto centred = torch::empty_like(x);
    for (int64_t c = 0; c < 2; ++c) {
      auto mask = y == c;
      if (mask.sum().item<int64_t>() == 0) continue;
      auto mu = x.index({mask}).mean(0);
      means.push_back(mu);
      centred.index_put_({mask}, x.index({mask}) - mu);
    }
    g.means = torch::stack(means);
    auto cov = centred.t().matmul(centred) / static_cast<double>(x.size(0));
    auto diag = cov.diagonal().clone();
    // Shrink towards the diagonal (scale invariant), with a floor for
    // channels that never fire on the training images.
    const double floor = 1e-6 * diag.mean().item<double>() + 1e-12;
    cov = cov * (1 - o.shrinkage) + torch::diag(diag) * o.shrinkage;
    cov = cov + torch::eye(cov.size(0), cov.options()) * floor;
    g.precision = torch::linalg::inv(cov);
    g.prepare();
    auto d = min_distance(g, x);
    g.score_mean = d.mean().item<double>();
    g.score_std = std::max(d.std().item<double>(), 1e-12);
    det.layers.push_back(std::move(g));
  }
  return det;
}

std::vector<std::string> OodDetector::layer_names() const {
  std::vector<std::string> out;
  for (const auto& g : layers) out.push_back(g.layer);
  return out;
}

torch::Tensor OodDetector::score(
    const std::vector<torch::Tensor>& features) const {
  if (features.size() != layers.size()) {
    throw ModelError("OOD detector: expected features of " +
                     std::to_string(layers.size()) + " layers, got " +
                     std::to_string(features.size()));
  }
  torch::Tensor total;
  for (size_t k = 0; k < layers.size(); ++k) {
    auto z = (min_distance(layers[k], features[k]) - layers[k].score_mean) /
             layers[k].score_std;
    if (!total.defined()) {
      total = z;
    } else if (combine == "max") {
      total = torch::maximum(total, z);
    } else {
      total = total + z;
    }
  }
  return combine == "max" ? total : total / static_cast<double>(layers.size());
}

void OodDetector::set_threshold(const torch::Tensor& scores,
                                double rate,
                                const std::string& rule) {
  if (!(rate > 0 && rate < 1)) {
    throw ConfigError("--ood-false-flag-rate must be in (0, 1), e.g. 0.05");
  }
  false_flag_rate = rate;
  auto v = std::get<0>(scores.to(torch::kFloat64).flatten().sort());
  const int64_t n = v.numel();
  if (n == 0) throw DataError("OOD detector: no images to set a threshold on");
  // The most flags k among these n images whose 95 % Wilson upper bound
  // stays within `rate`: the threshold then flags at most `rate` of new
  // in-distribution images with 95 % confidence, not just on average.
  int64_t k = 0;
  while (k + 1 < n && metrics::wilson_interval(k + 1, n).high <= rate) {
    ++k;
  }
  // Halfway between the last unflagged and the first flagged score.
  threshold =
      k == 0 ? v[n - 1].item<double>() + 1e-9
             : 0.5 * (v[n - k - 1].item<double>() + v[n - k].item<double>());
  threshold_rule = rule;
  fitted_flag_rate =
      (scores > threshold).to(torch::kFloat64).mean().item<double>();
}

namespace {

bool is_legacy_path(const std::string& path) {
  return path.size() >= 3 && path.compare(path.size() - 3, 3, ".pt") == 0;
}

[[noreturn]] void corrupt(const std::string& path, const std::string& why) {
  throw ModelError("'" + path + "' is corrupt (" +
                   why.substr(0, why.find('\n')) +
                   "); re-fit it with cxr calibrate RUN");
}

/// The scalar fields of a detector from its "meta" JSON (both formats).
void read_meta(const nlohmann::json& meta,
               const std::string& path,
               OodDetector* det) {
  if (!meta.is_object()) corrupt(path, "its description is not an object");
  if (!meta.contains("version") || !meta.at("version").is_number_integer() ||
      meta.at("version").get<int64_t>() != kOodVersion) {
    throw ModelError("'" + path + "' is an OOD detector of version " +
                     (meta.contains("version") ? meta.at("version").dump()
                                               : std::string("?")) +
                     ", this cxr reads " + std::to_string(kOodVersion) +
                     "; re-fit it with cxr calibrate RUN");
  }
  det->threshold = meta.at("threshold").get<double>();
  det->threshold_rule = meta.at("threshold_rule").get<std::string>();
  det->false_flag_rate = meta.at("false_flag_rate").get<double>();
  det->fitted_flag_rate = meta.at("fitted_flag_rate").get<double>();
  // NaN (never measured) is written to JSON as null.
  const auto& tq = meta.at("train_quantile");
  det->train_quantile = tq.is_null() ? NAN : tq.get<double>();
  // Files from before "combine" existed averaged the layers.
  det->combine = meta.value("combine", std::string("mean"));
  if (det->combine != "mean" && det->combine != "max") {
    throw ModelError("'" + path + "': unknown layer combination '" +
                     det->combine + "'; re-fit it with cxr calibrate RUN");
  }
}

/// Layer k of `stats` with its tensors, checked and prepared.
LayerGaussian read_layer(const nlohmann::json& stats,
                         size_t k,
                         torch::Tensor means,
                         torch::Tensor precision,
                         const std::string& path) {
  LayerGaussian g;
  g.layer = stats[k].at(0).get<std::string>();
  g.score_mean = stats[k].at(1).get<double>();
  g.score_std = stats[k].at(2).get<double>();
  g.means = std::move(means);
  g.precision = std::move(precision);
  if (g.means.dim() != 2 || g.precision.dim() != 2 ||
      g.precision.size(0) != g.means.size(1) ||
      g.precision.size(1) != g.means.size(1)) {
    throw ModelError("'" + path + "': layer " + g.layer +
                     " has mismatched shapes; re-fit it with cxr "
                     "calibrate RUN");
  }
  g.prepare();
  return g;
}

/// ood.pt of run folders written before ood.safetensors (LibTorch archive:
/// trusted input, docs/reliability.md).
OodDetector load_legacy(const std::string& path) {
  OodDetector det;
  torch::serialize::InputArchive ar;
  ar.load_from(path, torch::kCPU);
  c10::IValue meta_v;
  ar.read("meta", meta_v);
  const auto meta = nlohmann::json::parse(meta_v.toStringRef());
  read_meta(meta, path, &det);
  const auto& stats = meta.at("stats");
  for (size_t k = 0; k < stats.size(); ++k) {
    torch::Tensor means, precision;
    ar.read("means_" + std::to_string(k), means);
    ar.read("precision_" + std::to_string(k), precision);
    det.layers.push_back(read_layer(stats, k, means, precision, path));
  }
  torch::Tensor ref;
  ar.read("reference", ref);
  if (ref.numel() > 0) det.reference = ref.to(torch::kFloat32);
  return det;
}

/// ood.safetensors: cxr's checked reader (models/weights_file.h); the
/// description is __metadata__.cxr_ood, the tensors exactly means_K and
/// precision_K (float64) per layer and reference (float32).
OodDetector load_data_only(const std::string& path) {
  const std::string fix = "re-fit it with cxr calibrate RUN";
  const models::TensorFile file = models::read_tensor_file(path, fix);
  const auto it = file.metadata.find("cxr_ood");
  if (it == file.metadata.end()) {
    throw ModelError("'" + path +
                     "' is not a cxr OOD detector (no __metadata__.cxr_ood); " +
                     fix);
  }
  OodDetector det;
  const auto meta = nlohmann::json::parse(it->second);
  read_meta(meta, path, &det);
  const auto& stats = meta.at("stats");
  if (!stats.is_array() || stats.size() > 64) {
    corrupt(path, "\"stats\" is not a list of at most 64 layers");
  }
  std::map<std::string, torch::Tensor> tensors(file.tensors.begin(),
                                               file.tensors.end());
  auto take = [&](const std::string& name, torch::ScalarType type) {
    const auto t = tensors.find(name);
    if (t == tensors.end()) corrupt(path, "tensor '" + name + "' is missing");
    if (t->second.scalar_type() != type) {
      corrupt(path, "tensor '" + name + "' is " +
                        models::safetensors_dtype(t->second.scalar_type()) +
                        ", expected " + models::safetensors_dtype(type));
    }
    torch::Tensor v = t->second;
    tensors.erase(t);
    return v;
  };
  for (size_t k = 0; k < stats.size(); ++k) {
    auto means = take("means_" + std::to_string(k), torch::kFloat64);
    auto precision = take("precision_" + std::to_string(k), torch::kFloat64);
    det.layers.push_back(read_layer(stats, k, means, precision, path));
  }
  torch::Tensor ref = take("reference", torch::kFloat32);
  if (!tensors.empty()) {
    corrupt(path, "unexpected tensor '" + tensors.begin()->first + "'");
  }
  if (ref.numel() > 0) {
    // The input checks compare every image with it, rotated too: 32 x 32.
    if (ref.dim() != 2 || ref.size(0) != 32 || ref.size(1) != 32) {
      corrupt(path, "tensor 'reference' is not a 32 x 32 image");
    }
    det.reference = ref;
  }
  return det;
}

}  // namespace

void OodDetector::save(const std::string& path) const {
  nlohmann::json meta = summary();
  nlohmann::json stats = nlohmann::json::array();
  for (const auto& g : layers) {
    stats.push_back({g.layer, g.score_mean, g.score_std});
  }
  meta["stats"] = stats;
  const torch::Tensor ref = reference.defined()
                                ? reference.to(torch::kFloat32)
                                : torch::empty({0}, torch::kFloat32);
  if (!is_legacy_path(path)) {
    models::NamedTensors tensors;
    for (size_t k = 0; k < layers.size(); ++k) {
      tensors.emplace_back("means_" + std::to_string(k),
                           layers[k].means.to(torch::kFloat64));
      tensors.emplace_back("precision_" + std::to_string(k),
                           layers[k].precision.to(torch::kFloat64));
    }
    tensors.emplace_back("reference", ref);
    models::write_tensor_file(path, tensors, {{"cxr_ood", meta.dump()}});
    return;
  }
  write_file_atomic(path, [&](const fs::path& tmp) {
    torch::serialize::OutputArchive ar;
    ar.write("meta", c10::IValue(meta.dump()));
    for (size_t k = 0; k < layers.size(); ++k) {
      ar.write("means_" + std::to_string(k), layers[k].means);
      ar.write("precision_" + std::to_string(k), layers[k].precision);
    }
    ar.write("reference", reference.defined() ? reference : torch::empty({0}));
    ar.save_to(tmp.string());
  });
}

OodDetector OodDetector::load(const std::string& path) {
  if (!fs::is_regular_file(path)) {
    throw ModelError("'" + path +
                     "' is missing; the run's config.json names an OOD "
                     "detector: re-fit it with cxr calibrate RUN");
  }
  try {
    return is_legacy_path(path) ? load_legacy(path) : load_data_only(path);
  } catch (const ModelError&) {
    throw;
  } catch (const c10::Error& e) {
    corrupt(path, e.what_without_backtrace());
  } catch (const std::exception& e) {
    corrupt(path, e.what());
  }
}

std::string ood_file(const std::string& dir) {
  const fs::path data_only = fs::path(dir) / kOodFile;
  const fs::path legacy = fs::path(dir) / "ood.pt";
  if (!fs::exists(data_only) && fs::exists(legacy)) return legacy.string();
  return data_only.string();
}

nlohmann::json OodDetector::summary() const {
  return {{"version", kOodVersion},
          {"file", kOodFile},
          {"method",
           "Mahalanobis distance to the nearest class mean, shared shrunk "
           "covariance, per-channel mean and std of each layer, layers "
           "standardised and averaged"},
          {"layers", layer_names()},
          {"threshold", threshold},
          {"threshold_rule", threshold_rule},
          {"false_flag_rate", false_flag_rate},
          {"fitted_flag_rate", fitted_flag_rate},
          {"train_quantile", train_quantile},
          {"combine", combine}};
}

}  // namespace cxr::infer
