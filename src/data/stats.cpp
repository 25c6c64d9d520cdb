#include "cxr/data/stats.h"

#include <map>

namespace cxr::data {

PixelStats pixel_stats(const torch::Tensor& images) {
  PixelStats s;
  s.images = images.size(0);
  if (images.numel() == 0) return s;
  torch::Tensor x = images.to(torch::kFloat64).div(255.0);
  s.mean = x.mean().item<double>();
  s.std = x.std(/*unbiased=*/false).item<double>();
  return s;
}

std::vector<double> intensity_histogram(const torch::Tensor& images, int bins) {
  torch::Tensor x = images.to(torch::kFloat32).div(255.0f).flatten();
  torch::Tensor h = torch::histc(x, bins, 0.0, 1.0).to(torch::kFloat64);
  double total = h.sum().item<double>();
  if (total > 0) h = h / total * bins;  // density: integrates to 1 over [0,1]
  std::vector<double> out(static_cast<size_t>(bins));
  auto acc = h.accessor<double, 1>();
  for (int i = 0; i < bins; ++i) out[static_cast<size_t>(i)] = acc[i];
  return out;
}

torch::Tensor perceptual_fingerprints(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  namespace F = torch::nn::functional;
  torch::Tensor x = images.to(torch::kFloat32);
  if (images.scalar_type() == torch::kUInt8) x = x / 255.0f;
  x = F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions({24, 24}));
  auto local = F::avg_pool2d(
      x,
      F::AvgPool2dFuncOptions(5).stride(1).padding(2).count_include_pad(false));
  auto f = (x - local).flatten(1);
  f = f - f.mean(1, true);
  return f / f.norm(2, {1}, true).clamp_min(1e-8);
}

DuplicateReport find_duplicates(const Dataset& ds,
                                const DuplicateOptions& options) {
  torch::NoGradGuard no_grad;
  std::vector<ImageRef> refs;
  std::vector<uint64_t> exact;
  std::vector<torch::Tensor> fps;
  for (const auto& [split, set] : ds.splits) {
    fps.push_back(perceptual_fingerprints(set.images));
    for (int64_t i = 0; i < set.size(); ++i) {
      refs.push_back({split, i, set.paths[static_cast<size_t>(i)]});
      exact.push_back(set.pixel_hashes[static_cast<size_t>(i)]);
    }
  }
  DuplicateReport out;
  const auto n = static_cast<int64_t>(refs.size());
  out.nearest_similarity.assign(static_cast<size_t>(n), -1.0);
  if (n < 2) return out;
  const torch::Tensor fp = torch::cat(fps);
  // Blocks of rows keep the similarity matrix small for large datasets.
  const int64_t block = 1024;
  for (int64_t s = 0; s < n; s += block) {
    const int64_t e = std::min(n, s + block);
    auto sim = torch::matmul(fp.slice(0, s, e), fp.t()).to(torch::kFloat64);
    for (int64_t i = s; i < e; ++i) sim[i - s][i] = -2.0;  // self
    auto nearest = std::get<0>(sim.max(1));
    auto hits = (sim >= options.min_similarity).nonzero();
    auto acc = sim.accessor<double, 2>();
    for (int64_t i = s; i < e; ++i) {
      out.nearest_similarity[static_cast<size_t>(i)] =
          nearest[i - s].item<double>();
    }
    for (int64_t k = 0; k < hits.size(0); ++k) {
      const int64_t i = s + hits[k][0].item<int64_t>();
      const int64_t j = hits[k][1].item<int64_t>();
      if (j <= i) continue;  // each pair once
      if (exact[static_cast<size_t>(i)] == exact[static_cast<size_t>(j)]) {
        continue;  // reported below as exact
      }
      out.pairs.push_back({refs[static_cast<size_t>(i)],
                           refs[static_cast<size_t>(j)], "near",
                           acc[i - s][j]});
    }
  }
  // Exact duplicates: identical decoded pixels, found by hash.
  std::map<uint64_t, std::vector<int64_t>> by_hash;
  for (int64_t i = 0; i < n; ++i)
    by_hash[exact[static_cast<size_t>(i)]].push_back(i);
  for (const auto& [h, ids] : by_hash) {
    for (size_t a = 0; a < ids.size(); ++a) {
      for (size_t b = a + 1; b < ids.size(); ++b) {
        out.pairs.push_back({refs[static_cast<size_t>(ids[a])],
                             refs[static_cast<size_t>(ids[b])], "exact", 1.0});
        out.nearest_similarity[static_cast<size_t>(ids[a])] = 1.0;
        out.nearest_similarity[static_cast<size_t>(ids[b])] = 1.0;
      }
    }
  }
  return out;
}

}  // namespace cxr::data
