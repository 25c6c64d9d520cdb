// `cxr explain`: inputs (files, folders or a split), batched Grad-CAM,
// panels, records, thumbnails, index page, trust checks.
#include "cxr/explain/explain.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/progress.h"
#include "cxr/common/runtime.h"
#include "cxr/data/dataset.h"
#include "cxr/data/image_io.h"
#include "cxr/infer/predictor.h"
#include "cxr/version.h"
#include "cxr/viz/plot.h"

namespace cxr::explain {

namespace fs = std::filesystem;

namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

/// A file-system-safe, short version of a file's stem.
std::string safe_stem(const std::string& path) {
  std::string s = fs::path(path).stem().string();
  for (char& c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) c = '_';
  }
  if (s.size() > 60) s.resize(60);
  return s.empty() ? "image" : s;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

nlohmann::json shares_json(const EnergyShares& e) {
  auto num = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  return {{"lung", num(e.lung)}, {"border", num(e.border)}};
}

/// The images to explain, their true labels (-1 unknown) and, for a split,
/// the decoded images; files are read batch by batch instead.
struct Source {
  std::vector<std::string> files;
  std::vector<int> labels;
  torch::Tensor images;  ///< preloaded (split) or undefined (files)
  std::string description;
};

/// Torch intra-op threads set to 1 for the scope. Drawing works on tensors
/// of one image: OpenMP cannot speed them up, but its workers spin between
/// the many small ops and, on a busy machine, take the core from the thread
/// doing the work (100 panels on 2 loaded cores: 45.7 s with 2 threads,
/// 9.7 s with 1).
class SingleThreaded {
 public:
  SingleThreaded() : previous_(torch::get_num_threads()) {
    torch::set_num_threads(1);
  }
  ~SingleThreaded() { torch::set_num_threads(previous_); }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int previous_;
};

}  // namespace

void save_panel(const torch::Tensor& gray,
                const torch::Tensor& positive_map,
                const torch::Tensor& negative_map,
                const PanelInfo& info,
                const std::string& png_path) {
  const bool pos = info.probability >= info.threshold;
  const std::string predicted = pos ? info.positive : info.negative;
  std::string truth = "true label unknown";
  std::string verdict;
  if (info.label >= 0) {
    truth = "true: " + (info.label == 1 ? info.positive : info.negative);
    verdict = (info.label == 1) == pos ? "correct" : "WRONG";
  }
  const std::string p =
      "P(" + info.positive + ") " + fixed(info.probability, 3);
  const std::string title =
      info.warning.empty() ? info.title : info.title + "  |  " + info.warning;
  std::vector<viz::Tile> tiles = {
      {gray, "original\npredicted " + predicted + ", " + p},
      {viz::overlay_heatmap(gray, positive_map),
       info.positive + " evidence\n" + truth},
      {viz::overlay_heatmap(gray, negative_map),
       info.negative + " evidence\n" + verdict}};
  viz::GridOptions g;
  g.title = title;
  g.columns = 3;
  g.tile_size = 240;
  g.colorbar = true;
  g.colorbar_label = "Grad-CAM (normalised)";
  viz::save_image_grid(tiles, g, png_path);
}

nlohmann::json explain_run(const ExplainOptions& o) {
  if (o.batch_size < 1 || o.batch_size > 4096) {
    throw ConfigError("--batch-size must be in 1..4096");
  }
  if (o.limit < 0) throw ConfigError("--limit must be >= 0 (0 = all)");
  std::string split = o.split;
  if (o.misclassified && split.empty()) split = "test";
  if (!o.inputs.empty() && !split.empty()) {
    throw ConfigError(
        "give image files/folders or --split/--misclassified, "
        "not both");
  }
  if (o.skip_bad && split.empty()) {
    throw ConfigError(
        "--skip-bad applies to --split/--misclassified (a split of the "
        "run's data); for image files, fix or remove the unreadable ones");
  }
  if (o.inputs.empty() && split.empty()) {
    throw ConfigError(
        "nothing to explain: give image files or folders, or "
        "--split SPLIT (add --misclassified for the wrong "
        "predictions only)");
  }
  if (!split.empty()) data::parse_split(split);
  if (o.trust) o.trust_options.validate();

  const auto start = std::chrono::steady_clock::now();
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  pred.batch_size = o.batch_size;
  const auto& model = pred.model_ptr();
  // One pass gives the prediction, the OOD flag and both maps. The layer is
  // validated before any data is read.
  infer::PredictOptions with_maps;
  with_maps.maps = true;
  with_maps.layer = pred.cam_layer(o.layer);
  const std::string& layer = with_maps.layer;
  const int size = pred.config().model.input_size;
  // Decisions on the raw probability; panels show the calibrated one.
  const double threshold = pred.threshold();
  const double shown_threshold = pred.calibrated_threshold();
  const auto& positive = pred.config().positive;
  const auto& negative = pred.config().negative;

  Source src;
  int64_t split_size = 0;
  // --skip-bad: the data set's files left out, each {file, reason, split}.
  nlohmann::json skipped = nlohmann::json::array();
  if (!split.empty()) {
    auto dopts = pred.config().data_options(o.data_root, o.cache_dir);
    dopts.skip_bad = o.skip_bad;
    auto ds = data::load_dataset(dopts);
    std::map<std::string, data::Split> split_of;
    for (const auto& smp : ds.index.samples) split_of[smp.path] = smp.split;
    for (const auto& b : ds.skipped) {
      const auto it = split_of.find(b.path);
      skipped.push_back(
          {{"file", b.path},
           {"reason", b.reason},
           {"split", it == split_of.end()
                         ? nlohmann::json(nullptr)
                         : nlohmann::json(data::split_name(it->second))}});
    }
    const auto& set = ds.split(data::parse_split(split));
    if (set.size() > 0 && set.images.size(2) != size) {
      throw DataError("split '" + split + "' was loaded at " +
                      std::to_string(set.images.size(2)) +
                      " px but the model expects " + std::to_string(size) +
                      " px");
    }
    split_size = set.size();
    std::vector<int64_t> keep;
    if (o.misclassified && set.size() > 0) {
      auto p = infer::predict_proba(*model, set.images, device, o.batch_size);
      auto wrong = (p >= threshold) != (set.labels > 0.5);
      for (int64_t i = 0; i < set.size(); ++i) {
        if (wrong[i].item<bool>()) keep.push_back(i);
      }
    } else {
      for (int64_t i = 0; i < set.size(); ++i) keep.push_back(i);
    }
    if (o.limit > 0 && static_cast<int64_t>(keep.size()) > o.limit) {
      keep.resize(static_cast<size_t>(o.limit));
    }
    for (int64_t i : keep) {
      src.files.push_back(set.paths[static_cast<size_t>(i)]);
      src.labels.push_back(set.labels[i].item<float>() > 0.5f ? 1 : 0);
    }
    src.images = keep.empty() ? torch::empty({0, 1, size, size}, torch::kUInt8)
                              : set.images.index_select(
                                    0, torch::tensor(keep, torch::kInt64));
    src.description = std::string(o.misclassified ? "misclassified " : "") +
                      split + " images";
  } else {
    src.files = data::list_image_files(o.inputs);
    if (o.limit > 0 && static_cast<int64_t>(src.files.size()) > o.limit) {
      src.files.resize(static_cast<size_t>(o.limit));
    }
    for (const auto& f : src.files) {
      const auto parent = fs::path(f).parent_path().filename().string();
      src.labels.push_back(parent == positive   ? 1
                           : parent == negative ? 0
                                                : -1);
    }
    src.description = "image files";
  }

  const fs::path out =
      o.out_dir.empty() ? fs::path(o.run_dir) / "explain" : fs::path(o.out_dir);
  ensure_dir(out / "panels");
  ensure_dir(out / "records");
  ensure_dir(out / "thumbs");
  const int64_t n = static_cast<int64_t>(src.files.size());
  const int digits = std::max(4, static_cast<int>(std::to_string(n).size()));
  std::vector<nlohmann::json> records;
  std::vector<torch::Tensor> all_images;  // uint8, kept for --trust
  std::vector<std::string> names;
  int64_t wrong = 0, labelled = 0;
  double cam_seconds = 0;
  Progress bar("explain", static_cast<long>(n), o.progress);
  for (int64_t s = 0; s < n; s += o.batch_size) {
    const int64_t e = std::min(n, s + o.batch_size);
    // Files get the input checks (size, colour, aspect) on their decoded
    // originals; split images were checked by the detector alone.
    std::vector<infer::Prediction> preds;
    torch::Tensor batch;
    const auto t0 = std::chrono::steady_clock::now();
    if (src.images.defined()) {
      batch = src.images.slice(0, s, e);
      preds = pred.predict(batch, with_maps);
    } else {
      std::vector<data::GrayImage> decoded;
      std::vector<torch::Tensor> pre;
      {
        SingleThreaded one_image_at_a_time;
        for (int64_t i = s; i < e; ++i) {
          decoded.push_back(data::read_gray(src.files[static_cast<size_t>(i)]));
          pre.push_back(pred.preprocess(decoded.back()));
        }
      }
      batch = torch::stack(pre);
      preds = pred.predict(decoded, with_maps);
    }
    cam_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (o.trust) all_images.push_back(batch);
    SingleThreaded drawing;
    auto gray = batch.to(torch::kFloat32).div(255.0f);
    std::vector<torch::Tensor> pos_maps, neg_maps;
    for (const auto& pk : preds) {
      pos_maps.push_back(pk.positive_map);
      neg_maps.push_back(pk.negative_map);
    }
    auto pos_shares = energy_shares(torch::stack(pos_maps));
    auto neg_shares = energy_shares(torch::stack(neg_maps));
    for (int64_t k = 0; k < e - s; ++k) {
      const size_t i = static_cast<size_t>(s + k);
      std::ostringstream id;
      id << std::setw(digits) << std::setfill('0') << (s + k + 1);
      const std::string name = id.str() + "_" + safe_stem(src.files[i]);
      names.push_back(name);
      const auto& pk = preds[static_cast<size_t>(k)];
      const double p = pk.p_raw;
      const bool pred = pk.positive;
      const int label = src.labels[i];
      PanelInfo info;
      info.title = fs::path(src.files[i]).filename().string();
      info.positive = positive;
      info.negative = negative;
      info.probability = pk.p;
      info.threshold = shown_threshold;
      info.label = label;
      if (!pk.in_distribution) {
        info.warning = "OUT OF DISTRIBUTION: " + pk.reasons.front();
      }
      save_panel(gray[k][0], pk.positive_map, pk.negative_map, info,
                 (out / "panels" / (name + ".png")).string());
      data::write_png((out / "thumbs" / (name + ".png")).string(),
                      viz::overlay_heatmap(gray[k][0], pred ? pk.positive_map
                                                            : pk.negative_map));
      nlohmann::json rec = {
          {"index", s + k + 1},
          {"file", src.files[i]},
          {"panel", "panels/" + name + ".png"},
          {"thumbnail", "thumbs/" + name + ".png"},
          {"layer", layer},
          {"logit", pk.logit},
          {"p_" + positive, pk.p},
          {"p_" + positive + "_raw", p},
          {"threshold", shown_threshold},
          {"threshold_raw", threshold},
          {"ood_score", std::isnan(pk.ood_score)
                            ? nlohmann::json(nullptr)
                            : nlohmann::json(pk.ood_score)},
          {"in_distribution", pk.in_distribution},
          {"ood_reasons", pk.reasons},
          {"prediction", pred ? positive : negative},
          {"energy",
           {{positive + "_map",
             shares_json(pos_shares[static_cast<size_t>(k)])},
            {negative + "_map",
             shares_json(neg_shares[static_cast<size_t>(k)])}}}};
      if (label >= 0) {
        ++labelled;
        const bool ok = (label == 1) == pred;
        if (!ok) ++wrong;
        rec["true_label"] = label == 1 ? positive : negative;
        rec["correct"] = ok;
      } else {
        rec["true_label"] = nullptr;
        rec["correct"] = nullptr;
      }
      write_json_atomic(out / "records" / (name + ".json"), rec);
      records.push_back(std::move(rec));
    }
    bar.step(static_cast<long>(e - s));
  }
  bar.finish();

  nlohmann::json trust_summary;
  if (o.trust && n > 0) {
    TrustOptions t = o.trust_options;
    t.layer = layer;
    t.threshold = threshold;
    t.batch_size = o.batch_size;
    torch::Tensor labels;
    if (labelled == n) {
      labels = torch::tensor(
          std::vector<float>(src.labels.begin(), src.labels.end()));
    }
    auto report = trust_checks(model, torch::cat(all_images), labels, t);
    auto j = report.to_json();
    for (size_t i = 0; i < records.size(); ++i) {
      auto per = j["images"][i];
      per.erase("p_positive");
      per.erase("predicted");
      per.erase("label");
      records[i]["trust"] = per;
      write_json_atomic(out / "records" / (names[i] + ".json"), records[i]);
    }
    write_json_atomic(out / "trust.json", j);
    j.erase("images");
    trust_summary = j;
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  nlohmann::json summary = {
      {"run", o.run_dir},
      {"out", out.string()},
      {"arch", pred.config().model.arch},
      {"layer", layer},
      {"layers", model->tap_names()},
      {"device", device.str()},
      {"source", src.description},
      {"threshold", threshold},
      {"positive", positive},
      {"negative", negative},
      {"images", n},
      {"labelled", labelled},
      {"misclassified", wrong},
      {"gradcam_seconds", cam_seconds},
      {"gradcam_images_per_second",
       cam_seconds > 0 ? static_cast<double>(n) / cam_seconds : 0.0},
      {"seconds", seconds},
      {"records", "records/"},
      {"panels", "panels/"},
      {"index", "index.html"},
      {"cxr_version", kVersion},
      {"created", infer::utc_now()}};
  if (!split.empty()) {
    summary["split"] = split;
    summary["split_size"] = split_size;
    summary["only_misclassified"] = o.misclassified;
    summary["skipped"] = skipped;
  } else {
    summary["inputs"] = o.inputs;
  }
  if (!trust_summary.is_null()) summary["trust"] = trust_summary;
  write_json_atomic(out / "summary.json", summary);

  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
       << "<title>cxr explain: " << html_escape(src.description)
       << "</title>\n<style>body{font-family:sans-serif;margin:1.5em}"
       << ".card{display:inline-block;width:" << std::max(size, 128) + 16
       << "px;margin:6px;vertical-align:top;font-size:12px}"
       << ".card img{width:100%;image-rendering:pixelated}"
       << ".wrong{color:#b00}</style></head><body>\n"
       << "<h1>Grad-CAM: " << n << " " << html_escape(src.description)
       << "</h1>\n<p>run <code>" << html_escape(o.run_dir)
       << "</code>, layer <code>" << html_escape(layer) << "</code>, threshold "
       << fixed(threshold, 3)
       << ". Thumbnails show the map of the predicted class; click for the "
          "panel (original | "
       << html_escape(positive) << " evidence | " << html_escape(negative)
       << " evidence).</p>\n";
  if (!trust_summary.is_null()) {
    const auto& rz = trust_summary["randomization"];
    html << "<p>Randomisation check: mean rank correlation "
         << fixed(rz["mean_rank_correlation"].is_null()
                      ? NAN
                      : rz["mean_rank_correlation"].get<double>(),
                  3)
         << (rz["untrustworthy"].get<bool>()
                 ? " &mdash; <b class=\"wrong\">maps barely depend on the "
                   "model: untrustworthy</b>"
                 : " (maps depend on the model)")
         << ". See trust.json.</p>\n";
  }
  if (!skipped.empty()) {
    html << "<p>Skipped " << skipped.size()
         << " unreadable images (--skip-bad):</p>\n<ul>\n";
    for (const auto& b : skipped) {
      html << "<li><code>" << html_escape(b["file"].get<std::string>())
           << "</code>: " << html_escape(b["reason"].get<std::string>())
           << "</li>\n";
    }
    html << "</ul>\n";
  }
  if (n == 0) html << "<p>Nothing to show.</p>\n";
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const bool bad = r["correct"].is_boolean() && !r["correct"].get<bool>();
    html << "<div class=\"card\"><a href=\"panels/" << html_escape(names[i])
         << ".png\"><img src=\"thumbs/" << html_escape(names[i])
         << ".png\" loading=\"lazy\" alt=\"" << html_escape(names[i])
         << "\"></a><br>"
         << html_escape(fs::path(src.files[i]).filename().string())
         << "<br><span" << (bad ? " class=\"wrong\"" : "") << ">pred "
         << html_escape(r["prediction"].get<std::string>()) << ", P("
         << html_escape(positive) << ") "
         << fixed(r["p_" + positive].get<double>(), 3);
    if (r["true_label"].is_string()) {
      html << ", true " << html_escape(r["true_label"].get<std::string>());
    }
    html << "</span></div>\n";
  }
  html << "</body></html>\n";
  write_text_atomic(out / "index.html", html.str());
  return summary;
}

}  // namespace cxr::explain
