#include "cxr/data/explore.h"

#include <iomanip>

#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/viz/plot.h"

namespace fs = std::filesystem;

namespace cxr::data {
namespace {

// summary.json and the printed summary write an undefined value as "nan".
std::string fmt(double v, int digits = 3) {
  return fixed(v, digits, "nan");
}

nlohmann::json stats_json(const PixelStats& s) {
  return {{"mean", s.mean}, {"std", s.std}, {"images", s.images}};
}

torch::Tensor select_label(const ImageSet& set, int label) {
  auto idx = (set.labels == static_cast<float>(label)).nonzero().squeeze(1);
  return set.images.index_select(0, idx);
}

// The data set itself: folder, load, skipped files, counts, pixel
// statistics, sizes and formats, normalisation.
nlohmann::json describe(const Dataset& ds) {
  const auto& idx = ds.index;
  nlohmann::json j;
  j["dataset"] = {{"root", idx.root},
                  {"layout", idx.layout},
                  {"classes", idx.classes},
                  {"positive", idx.positive},
                  {"negative", idx.negative}};
  j["load"] = {{"seconds", ds.stats.seconds},
               {"from_cache", ds.stats.from_cache},
               {"decoded", ds.stats.decoded}};
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& b : ds.skipped) {
    skipped.push_back({{"path", b.path}, {"reason", b.reason}});
  }
  j["skipped"] = skipped;

  std::map<std::string, int64_t> sizes, depths;
  for (const auto& [split, set] : ds.splits) {
    const std::string sn = split_name(split);
    int64_t pos = static_cast<int64_t>(set.labels.sum().item<double>());
    j["counts"][sn] = {{idx.positive, pos},
                       {idx.negative, set.size() - pos},
                       {"total", set.size()}};
    j["pixel_stats"][sn]["all"] = stats_json(pixel_stats(set.images));
    j["pixel_stats"][sn][idx.positive] =
        stats_json(pixel_stats(select_label(set, 1)));
    j["pixel_stats"][sn][idx.negative] =
        stats_json(pixel_stats(select_label(set, 0)));
    for (const auto& info : set.infos) {
      sizes[std::to_string(info.width) + "x" + std::to_string(info.height)]++;
      depths[std::to_string(info.bit_depth) + "-bit " + info.color + " " +
             info.format]++;
    }
  }
  j["image_sizes"] = sizes;
  j["bit_depths"] = depths;
  j["model_input_size"] = ds.split(Split::kTrain).images.size(2);

  ImageSet tv = ds.train_val();
  PixelStats norm = pixel_stats(tv.images);
  j["normalization"] = {
      {"source", "train+val"}, {"mean", norm.mean}, {"std", norm.std}};
  return j;
}

// Histograms per class over all splits: histograms.png and their values.
nlohmann::json write_histograms(const Dataset& ds,
                                const ExploreOptions& o,
                                const fs::path& out) {
  const auto& idx = ds.index;
  ImageSet all = concat({&ds.split(Split::kTrain), &ds.split(Split::kVal),
                         &ds.split(Split::kTest)});
  viz::LineChart hist;
  hist.title = "Pixel intensity per class (all splits)";
  hist.x_label = "intensity";
  hist.y_label = "density";
  // Intensities span [0, 1]; densities start at 0.
  hist.x_min = hist.y_min = 0;
  hist.x_max = 1;
  std::vector<double> centers(static_cast<size_t>(o.histogram_bins));
  for (int b = 0; b < o.histogram_bins; ++b) {
    centers[static_cast<size_t>(b)] = (b + 0.5) / o.histogram_bins;
  }
  nlohmann::json j;
  j["bin_centers"] = centers;
  for (int label : {1, 0}) {
    const std::string& name = label ? idx.positive : idx.negative;
    auto h = intensity_histogram(select_label(all, label), o.histogram_bins);
    j[name] = h;
    hist.series.push_back({name, centers, h, label == 0, true});
  }
  viz::save_line_chart(hist, (out / "histograms.png").string());
  return j;
}

// Sample grid: the first images of each class in the training split.
void write_samples(const Dataset& ds,
                   const ExploreOptions& o,
                   const fs::path& out) {
  const auto& idx = ds.index;
  std::vector<viz::Tile> tiles;
  const ImageSet& train = ds.split(Split::kTrain);
  for (int label : {1, 0}) {
    auto ids = (train.labels == static_cast<float>(label)).nonzero().squeeze(1);
    const int64_t k = std::min<int64_t>(o.samples_per_class, ids.size(0));
    for (int64_t t = 0; t < k; ++t) {
      const int64_t i = ids[t].item<int64_t>();
      tiles.push_back({train.images[i][0].to(torch::kFloat32) / 255.0f,
                       (label ? idx.positive : idx.negative) + "\n" +
                           fs::path(train.paths[static_cast<size_t>(i)])
                               .filename()
                               .string()});
    }
  }
  viz::GridOptions grid;
  grid.title = "Training samples per class (as the model sees them)";
  grid.columns = std::max(1, o.samples_per_class);
  viz::save_image_grid(tiles, grid, (out / "samples.png").string());
}

// Duplicates and leakage: duplicates.csv and summary.json's "duplicates".
nlohmann::json write_duplicates(const Dataset& ds,
                                const ExploreOptions& o,
                                const fs::path& out) {
  auto report = find_duplicates(ds, o.duplicates);
  nlohmann::json quantiles;
  if (!report.nearest_similarity.empty()) {
    auto q = torch::tensor(report.nearest_similarity, torch::kFloat64);
    for (double p : {0.5, 0.9, 0.99, 1.0}) {
      quantiles[fmt(p, 2)] = torch::quantile(q, p).item<double>();
    }
  }
  int64_t exact_within = 0, near_within = 0;
  nlohmann::json cross = nlohmann::json::array();
  std::string csv = "kind,similarity,split_a,path_a,split_b,path_b\n";
  for (const auto& d : report.pairs) {
    csv += d.kind + "," + fmt(d.similarity, 4) + "," + split_name(d.a.split) +
           "," + csv_field(d.a.path) + "," + split_name(d.b.split) + "," +
           csv_field(d.b.path) + "\n";
    if (d.cross_split()) {
      cross.push_back({{"kind", d.kind},
                       {"similarity", d.similarity},
                       {"split_a", split_name(d.a.split)},
                       {"path_a", d.a.path},
                       {"split_b", split_name(d.b.split)},
                       {"path_b", d.b.path}});
    } else if (d.kind == "exact") {
      ++exact_within;
    } else {
      ++near_within;
    }
  }
  write_text_atomic(out / "duplicates.csv", csv);
  return {{"method",
           "exact: identical decoded pixels; near: correlation of "
           "band-passed 24x24 perceptual fingerprints"},
          {"min_similarity", o.duplicates.min_similarity},
          {"exact_within_split", exact_within},
          {"near_within_split", near_within},
          {"cross_split_count", cross.size()},
          {"nearest_similarity_quantiles", quantiles},
          {"cross_split", cross}};
}

}  // namespace

nlohmann::json explore(const Dataset& ds, const ExploreOptions& o) {
  ensure_dir(o.out_dir);
  const fs::path out(o.out_dir);
  nlohmann::json j = describe(ds);
  j["histograms"] = write_histograms(ds, o, out);
  write_samples(ds, o, out);
  j["duplicates"] = write_duplicates(ds, o, out);
  j["files"] = {"summary.json", "histograms.png", "samples.png",
                "duplicates.csv"};
  write_json_atomic(out / "summary.json", j);
  return j;
}

std::string format_summary(const nlohmann::json& j) {
  std::ostringstream s;
  const auto& d = j["dataset"];
  const std::string pos = d["positive"], neg = d["negative"];
  s << "dataset  " << d["root"].get<std::string>() << "  ("
    << d["layout"].get<std::string>() << " layout, positive class " << pos
    << ")\n\n";
  s << std::left << std::setw(8) << "split" << std::right << std::setw(8) << pos
    << std::setw(8) << neg << std::setw(8) << "total"
    << "   mean   std"
    << "   mean(" << pos << ")  mean(" << neg << ")\n";
  for (const char* sp : {"train", "val", "test"}) {
    if (!j["counts"].contains(sp)) continue;
    const auto& c = j["counts"][sp];
    const auto& p = j["pixel_stats"][sp];
    s << std::left << std::setw(8) << sp << std::right << std::setw(8)
      << c[pos].get<int64_t>() << std::setw(8) << c[neg].get<int64_t>()
      << std::setw(8) << c["total"].get<int64_t>() << "   "
      << fmt(p["all"]["mean"]) << "  " << fmt(p["all"]["std"]) << "   "
      << fmt(p[pos]["mean"]) << std::string(pos.size() + 2, ' ')
      << fmt(p[neg]["mean"]) << "\n";
  }
  s << "\nimage sizes:";
  for (const auto& [k, v] : j["image_sizes"].items()) {
    s << "  " << k << " x" << v.get<int64_t>();
  }
  s << "\nformats:    ";
  for (const auto& [k, v] : j["bit_depths"].items()) {
    s << "  " << k << " x" << v.get<int64_t>();
  }
  const auto& n = j["normalization"];
  s << "\nnormalisation (train+val, " << j["model_input_size"].get<int64_t>()
    << " px): mean " << fmt(n["mean"], 4) << "  std " << fmt(n["std"], 4);
  const auto& du = j["duplicates"];
  s << "\nduplicates: " << du["exact_within_split"].get<int64_t>()
    << " exact and " << du["near_within_split"].get<int64_t>()
    << " near pairs within splits; " << du["cross_split_count"].get<int64_t>()
    << " pairs cross splits"
    << (du["cross_split_count"].get<int64_t>() == 0 ? " (no leakage found)"
                                                    : " (LEAKAGE: see below)")
    << "\n";
  if (du.contains("nearest_similarity_quantiles") &&
      !du["nearest_similarity_quantiles"].is_null()) {
    const auto& q = du["nearest_similarity_quantiles"];
    s << "  each image's most similar other image: median " << fmt(q["0.50"])
      << ", 99th percentile " << fmt(q["0.99"]) << ", max " << fmt(q["1.00"])
      << " (near-duplicate at >= " << fmt(du["min_similarity"], 2) << ")\n";
  }
  for (const auto& p : du["cross_split"]) {
    s << "  " << p["kind"].get<std::string>() << " "
      << fmt(p["similarity"].get<double>()) << "  "
      << p["split_a"].get<std::string>() << ":"
      << p["path_a"].get<std::string>() << "  <->  "
      << p["split_b"].get<std::string>() << ":"
      << p["path_b"].get<std::string>() << "\n";
  }
  if (!j["skipped"].empty()) {
    s << "skipped " << j["skipped"].size() << " bad files:\n";
    for (const auto& b : j["skipped"]) {
      s << "  " << b["reason"].get<std::string>() << "\n";
    }
  }
  const auto& l = j["load"];
  s << "loaded in " << fmt(l["seconds"], 2) << " s ("
    << l["from_cache"].get<int64_t>() << " from cache, "
    << l["decoded"].get<int64_t>() << " decoded)\n";
  return s.str();
}

}  // namespace cxr::data
