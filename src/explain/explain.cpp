// `cxr explain`: inputs (files, folders or a split), batched Grad-CAM,
// panels (panel.cpp), records, thumbnails, raw maps; then the trust checks
// and the index page (explain_page.cpp). Each step is a function below,
// called in order by explain_run.
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
#include "cxr/data/listing.h"
#include "cxr/infer/gradcam.h"
#include "cxr/infer/predictor.h"
#include "cxr/viz/plot.h"
#include "internal.h"

namespace cxr::explain {

namespace fs = std::filesystem;
using detail::num;
using detail::shares_json;

namespace {

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

/// Checks the flags that need no run; returns the split ("" = files).
std::string check_options(const ExplainOptions& o) {
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
  return split;
}

/// Indices of a split's images to explain: all, or those the run's
/// threshold gets wrong; at most `limit`.
std::vector<int64_t> pick(infer::Predictor& pred,
                          const data::ImageSet& set,
                          const ExplainOptions& o) {
  std::vector<int64_t> keep;
  if (o.misclassified && set.size() > 0) {
    const auto& model = *pred.model_ptr();
    auto p = infer::predict_proba(*pred.model_ptr(), set.images,
                                  infer::model_device(model), o.batch_size);
    auto wrong = (p >= pred.threshold()) != (set.labels > 0.5);
    for (int64_t i = 0; i < set.size(); ++i) {
      if (wrong[i].item<bool>()) keep.push_back(i);
    }
  } else {
    for (int64_t i = 0; i < set.size(); ++i) keep.push_back(i);
  }
  if (o.limit > 0 && static_cast<int64_t>(keep.size()) > o.limit) {
    keep.resize(static_cast<size_t>(o.limit));
  }
  return keep;
}

/// A split of the run's data: loaded once (with --skip-bad the files left
/// out go into `r.skipped`), then narrowed by pick().
Source split_source(infer::Predictor& pred,
                    const ExplainOptions& o,
                    const std::string& split,
                    ExplainResult& r) {
  const int size = pred.config().model.input_size;
  auto dopts = pred.config().data_options(o.data_root, o.cache_dir);
  dopts.skip_bad = o.skip_bad;
  auto ds = data::load_dataset(dopts);
  std::map<std::string, data::Split> split_of;
  for (const auto& smp : ds.index.samples) split_of[smp.path] = smp.split;
  for (const auto& b : ds.skipped) {
    const auto it = split_of.find(b.path);
    r.skipped.push_back(
        {b.path, b.reason,
         it == split_of.end() ? std::string() : data::split_name(it->second)});
  }
  const auto& set = ds.split(data::parse_split(split));
  if (set.size() > 0 && set.images.size(2) != size) {
    throw DataError("split '" + split + "' was loaded at " +
                    std::to_string(set.images.size(2)) +
                    " px but the model expects " + std::to_string(size) +
                    " px");
  }
  r.split = split;
  r.split_size = set.size();
  r.only_misclassified = o.misclassified;
  Source src;
  const auto keep = pick(pred, set, o);
  for (int64_t i : keep) {
    src.files.push_back(set.paths[static_cast<size_t>(i)]);
    src.labels.push_back(set.labels[i].item<float>() > 0.5f ? 1 : 0);
  }
  src.images = keep.empty() ? torch::empty({0, 1, size, size}, torch::kUInt8)
                            : set.images.index_select(
                                  0, torch::tensor(keep, torch::kInt64));
  src.description =
      std::string(o.misclassified ? "misclassified " : "") + split + " images";
  return src;
}

/// Image files and folders; a parent folder named like a class gives the
/// true label.
Source file_source(const ExplainOptions& o,
                   const std::string& positive,
                   const std::string& negative) {
  Source src;
  src.files = data::list_image_files(o.inputs);
  if (o.limit > 0 && static_cast<int64_t>(src.files.size()) > o.limit) {
    src.files.resize(static_cast<size_t>(o.limit));
  }
  for (const auto& f : src.files) {
    const auto parent = fs::path(f).parent_path().filename().string();
    src.labels.push_back(parent == positive ? 1 : parent == negative ? 0 : -1);
  }
  src.description = "image files";
  return src;
}

/// One batch through the Predictor: the model's uint8 input and, per image,
/// the prediction with both maps. Files get the input checks (size, colour,
/// aspect) on their decoded originals; split images were checked by the
/// detector alone.
struct Scored {
  torch::Tensor batch;
  std::vector<infer::Prediction> preds;
};

Scored score_batch(infer::Predictor& pred,
                   const Source& src,
                   int64_t s,
                   int64_t e,
                   const infer::PredictOptions& with_maps) {
  Scored out;
  if (src.images.defined()) {
    out.batch = src.images.slice(0, s, e);
    out.preds = pred.predict(out.batch, with_maps);
    return out;
  }
  std::vector<data::GrayImage> decoded;
  std::vector<torch::Tensor> pre;
  {
    SingleThreaded one_image_at_a_time;
    for (int64_t i = s; i < e; ++i) {
      decoded.push_back(data::read_gray(src.files[static_cast<size_t>(i)]));
      pre.push_back(pred.preprocess(decoded.back()));
    }
  }
  out.batch = torch::stack(pre);
  out.preds = pred.predict(decoded, with_maps);
  return out;
}

/// What every image's files need to know about the run.
struct Context {
  fs::path out;
  std::string layer, positive, negative;
  double threshold = 0.5;        ///< raw: decisions
  double shown_threshold = 0.5;  ///< calibrated: panels
  bool save_maps = false;
};

/// Panel, thumbnail, raw maps and record of one image; returns the record.
nlohmann::json write_image(const Context& c,
                           const torch::Tensor& gray,
                           const infer::Prediction& pk,
                           const ExplainedImage& im,
                           int64_t index,
                           const EnergyShares& pos_share,
                           const EnergyShares& neg_share) {
  PanelInfo info;
  info.title = fs::path(im.file).filename().string();
  info.positive = c.positive;
  info.negative = c.negative;
  info.probability = pk.p;
  info.threshold = c.shown_threshold;
  info.label = im.label;
  if (!pk.in_distribution) {
    info.warning = "OUT OF DISTRIBUTION: " + pk.reasons.front();
  }
  save_panel(gray, pk.positive_map, pk.negative_map, info,
             (c.out / "panels" / (im.name + ".png")).string());
  data::write_png((c.out / "thumbs" / (im.name + ".png")).string(),
                  viz::overlay_heatmap(
                      gray, pk.positive ? pk.positive_map : pk.negative_map));
  nlohmann::json rec = {{"index", index},
                        {"file", im.file},
                        {"panel", "panels/" + im.name + ".png"},
                        {"thumbnail", "thumbs/" + im.name + ".png"},
                        {"layer", c.layer},
                        {"logit", pk.logit},
                        {"p_" + c.positive, pk.p},
                        {"p_" + c.positive + "_raw", pk.p_raw},
                        {"threshold", c.shown_threshold},
                        {"threshold_raw", c.threshold},
                        {"ood_score", num(pk.ood_score)},
                        {"in_distribution", pk.in_distribution},
                        {"ood_reasons", pk.reasons},
                        {"prediction", pk.positive ? c.positive : c.negative},
                        {"energy",
                         {{c.positive + "_map", shares_json(pos_share)},
                          {c.negative + "_map", shares_json(neg_share)}}}};
  if (c.save_maps) {
    const std::string pos = "maps/" + im.name + "_" + safe_stem(c.positive);
    const std::string neg = "maps/" + im.name + "_" + safe_stem(c.negative);
    write_npy((c.out / (pos + ".npy")).string(), pk.positive_map);
    write_npy((c.out / (neg + ".npy")).string(), pk.negative_map);
    rec["maps"] = {{c.positive, pos + ".npy"}, {c.negative, neg + ".npy"}};
  }
  if (im.label >= 0) {
    rec["true_label"] = im.label == 1 ? c.positive : c.negative;
    rec["correct"] = (im.label == 1) == pk.positive;
  } else {
    rec["true_label"] = nullptr;
    rec["correct"] = nullptr;
  }
  write_json_atomic(c.out / "records" / (im.name + ".json"), rec);
  return rec;
}

/// Draws one batch's outputs and adds its images to the result.
void write_batch(const Context& c,
                 const Source& src,
                 int64_t s,
                 const Scored& scored,
                 int digits,
                 ExplainResult& r,
                 std::vector<nlohmann::json>& records) {
  SingleThreaded drawing;
  auto gray = scored.batch.to(torch::kFloat32).div(255.0f);
  std::vector<torch::Tensor> pos_maps, neg_maps;
  for (const auto& pk : scored.preds) {
    pos_maps.push_back(pk.positive_map);
    neg_maps.push_back(pk.negative_map);
  }
  auto pos_shares = energy_shares(torch::stack(pos_maps));
  auto neg_shares = energy_shares(torch::stack(neg_maps));
  for (size_t k = 0; k < scored.preds.size(); ++k) {
    const size_t i = static_cast<size_t>(s) + k;
    const auto& pk = scored.preds[k];
    std::ostringstream id;
    id << std::setw(digits) << std::setfill('0') << (i + 1);
    ExplainedImage im;
    im.name = id.str() + "_" + safe_stem(src.files[i]);
    im.file = src.files[i];
    im.predicted_positive = pk.positive;
    im.probability = pk.p;
    im.label = src.labels[i];
    records.push_back(write_image(c, gray[static_cast<int64_t>(k)][0], pk, im,
                                  static_cast<int64_t>(i) + 1, pos_shares[k],
                                  neg_shares[k]));
    if (im.label >= 0) {
      ++r.labelled;
      if ((im.label == 1) != pk.positive) ++r.misclassified;
    }
    r.explained.push_back(std::move(im));
  }
}

/// The trust checks on the explained images: trust.json, each record's
/// per-image values, and r.trust.
void run_trust(const models::Classifier& model,
               const ExplainOptions& o,
               const Context& c,
               const Source& src,
               const torch::Tensor& images,
               std::vector<nlohmann::json>& records,
               ExplainResult& r) {
  TrustOptions t = o.trust_options;
  t.layer = c.layer;
  t.threshold = c.threshold;
  t.batch_size = o.batch_size;
  torch::Tensor labels;
  if (r.labelled == r.images) {
    labels =
        torch::tensor(std::vector<float>(src.labels.begin(), src.labels.end()));
  }
  r.trust = trust_checks(model, images, labels, t);
  auto j = r.trust->to_json();
  for (size_t i = 0; i < records.size(); ++i) {
    auto per = j["images"][i];
    per.erase("p_positive");
    per.erase("predicted");
    per.erase("label");
    records[i]["trust"] = per;
    write_json_atomic(c.out / "records" / (r.explained[i].name + ".json"),
                      records[i]);
  }
  write_json_atomic(c.out / "trust.json", j);
}

}  // namespace

ExplainResult explain_run(const ExplainOptions& o) {
  const std::string split = check_options(o);
  const auto start = std::chrono::steady_clock::now();
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  pred.batch_size = o.batch_size;
  // One pass gives the prediction, the OOD flag and both maps. The layer is
  // validated before any data is read.
  infer::PredictOptions with_maps;
  with_maps.maps = true;
  with_maps.layer = pred.cam_layer(o.layer);
  ExplainResult r;
  r.run = o.run_dir;
  r.arch = pred.config().model.arch;
  r.layer = with_maps.layer;
  r.layers = pred.model_ptr()->tap_names();
  r.device = device.str();
  // Decisions on the raw probability; panels show the calibrated one.
  r.threshold = pred.threshold();
  r.positive = pred.config().positive;
  r.negative = pred.config().negative;
  const Source src = split.empty() ? file_source(o, r.positive, r.negative)
                                   : split_source(pred, o, split, r);
  if (split.empty()) r.inputs = o.inputs;
  r.source = src.description;
  Context c;
  c.out =
      o.out_dir.empty() ? fs::path(o.run_dir) / "explain" : fs::path(o.out_dir);
  c.layer = r.layer;
  c.positive = r.positive;
  c.negative = r.negative;
  c.threshold = r.threshold;
  c.shown_threshold = pred.calibrated_threshold();
  c.save_maps = o.save_maps;
  r.out = c.out.string();
  r.maps_saved = o.save_maps;
  for (const char* sub : {"panels", "records", "thumbs"})
    ensure_dir(c.out / sub);
  if (o.save_maps) ensure_dir(c.out / "maps");

  r.images = static_cast<int64_t>(src.files.size());
  const int64_t n = r.images;
  const int digits = std::max(4, static_cast<int>(std::to_string(n).size()));
  std::vector<nlohmann::json> records;
  std::vector<torch::Tensor> all_images;  // uint8, kept for --trust
  Progress bar("explain", static_cast<long>(n), o.progress);
  for (int64_t s = 0; s < n; s += o.batch_size) {
    const int64_t e = std::min(n, s + o.batch_size);
    const auto t0 = std::chrono::steady_clock::now();
    const Scored scored = score_batch(pred, src, s, e, with_maps);
    r.gradcam_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (o.trust) all_images.push_back(scored.batch);
    write_batch(c, src, s, scored, digits, r, records);
    bar.step(static_cast<long>(e - s));
  }
  bar.finish();
  if (o.trust && n > 0) {
    run_trust(pred.model_ptr(), o, c, src, torch::cat(all_images), records, r);
  }
  r.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  r.created = infer::utc_now();
  write_json_atomic(c.out / "summary.json", r.to_json());
  detail::write_index(r, c.out, pred.config().model.input_size);
  return r;
}

LayerList list_layers(const std::string& run_dir) {
  const auto cfg = infer::read_run_config(run_dir);
  auto model =
      infer::load_model(run_dir, cfg.model, torch::Device(torch::kCPU));
  LayerList l;
  l.names = model->tap_names();
  l.default_layer = model->default_tap();
  return l;
}

std::string LayerList::format() const {
  std::string s;
  for (const auto& name : names) {
    s += name + (name == default_layer ? "  (default)" : "") + "\n";
  }
  return s;
}

}  // namespace cxr::explain
