#include "cxr/train/run.h"

#include <iostream>
#include <optional>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/common/vectors.h"
#include "cxr/data/stats.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/metrics/metrics.h"
#include "cxr/models/transfer.h"
#include "cxr/train/run_dir.h"

namespace fs = std::filesystem;

namespace cxr::train {
namespace {

struct ChosenThreshold {
  double value = 0.5;
  std::string rule;
};

// Checks the threshold flags before training (not after an hour of it) and
// reads the threshold a refit carries over from its train-only run.
std::optional<ChosenThreshold> check_threshold_options(const RunOptions& o) {
  const int given = (o.target_sensitivity != 0 ? 1 : 0) +
                    (o.balanced_threshold ? 1 : 0) +
                    (o.threshold_from.empty() ? 0 : 1);
  if (given > 1) {
    throw ConfigError(
        "give only one of --target-sensitivity, --balanced-threshold and "
        "--threshold-from");
  }
  if (!(o.target_sensitivity >= 0 && o.target_sensitivity <= 1)) {
    throw ConfigError("--target-sensitivity must be in (0, 1], e.g. 0.95");
  }
  const bool has_val = o.train.train_on == "train";
  if (!has_val && (o.target_sensitivity > 0 || o.balanced_threshold)) {
    throw ConfigError(
        "--target-sensitivity and --balanced-threshold choose the threshold "
        "on validation, which --train-on train+val trains on; choose it in a "
        "run on train and pass that run as --threshold-from");
  }
  if (o.threshold_from.empty()) return std::nullopt;
  const fs::path cfg = fs::path(o.threshold_from) / "config.json";
  if (!fs::is_regular_file(cfg)) {
    throw ConfigError("--threshold-from " + o.threshold_from +
                      ": no config.json there; give the folder of a finished "
                      "cxr train run");
  }
  const auto j = read_json(cfg);
  if (j.value("status", std::string()) == "training") {
    throw ConfigError("--threshold-from " + o.threshold_from +
                      ": that run has not finished training");
  }
  const RunMeta m = RunMeta::from_json(j, cfg.string());
  if (m.train.train_on != "train") {
    throw ConfigError("--threshold-from " + o.threshold_from +
                      ": that run trained on " + m.train.train_on +
                      ", so its threshold was not chosen on held-out "
                      "validation; give a run trained on train");
  }
  if (m.model.arch != o.model.arch) {
    throw ConfigError("--threshold-from " + o.threshold_from +
                      ": that run is a " + m.model.arch + ", this one a " +
                      o.model.arch +
                      "; a threshold only carries over within one recipe");
  }
  return ChosenThreshold{m.threshold, m.threshold_rule + " of run " +
                                          o.threshold_from +
                                          " (same recipe on train)"};
}

}  // namespace

nlohmann::json describe_data(const data::Dataset& ds,
                             const data::DatasetOptions& o) {
  nlohmann::json counts;
  for (const auto& [s, set] : ds.splits) {
    const auto pos = static_cast<int64_t>(set.labels.sum().item<double>());
    counts[data::split_name(s)] = {{ds.index.positive, pos},
                                   {ds.index.negative, set.size() - pos}};
  }
  return {{"root", fs::absolute(o.root).lexically_normal().string()},
          {"layout", ds.index.layout},
          {"classes", ds.index.classes},
          {"size", o.size},
          {"seed", o.seed},
          {"train_fraction", o.train_fraction},
          {"val_fraction", o.val_fraction},
          {"positive", ds.index.positive},
          {"counts", counts},
          {"skipped", ds.skipped.size()}};
}

data::DatasetOptions data_options_from(const nlohmann::json& d,
                                       const std::string& root_override,
                                       const std::string& cache_dir) {
  infer::RunConfig c;
  c.data = d;
  return c.data_options(root_override, cache_dir);
}

nlohmann::json train_run(const RunOptions& o, const data::Dataset* preloaded) {
  o.train.validate();
  o.ood.validate();
  const auto carried = check_threshold_options(o);
  const torch::Device device = resolve_device(o.device);
  data::Dataset owned;
  if (!preloaded) {
    owned = data::load_dataset(o.data);
    // --skip-bad: one line per file left out, as explore and predict list
    // them (a preloaded set was listed by whoever loaded it).
    for (const auto& b : owned.skipped) {
      std::cerr << "cxr: skipped " << b.reason << "\n";
    }
  }
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  if (ds.split(data::Split::kTrain).images.size(2) != o.model.input_size) {
    throw ConfigError(
        "data was loaded at " +
        std::to_string(ds.split(data::Split::kTrain).images.size(2)) +
        " px but the model expects " + std::to_string(o.model.input_size) +
        " px (--size)");
  }

  seed_everything(o.train.seed);
  models::ModelConfig mc = o.model;
  const data::ImageSet tv = ds.train_val();
  const auto norm = data::pixel_stats(tv.images);
  mc.mean = norm.mean;
  mc.std = norm.std;
  if (mc.arch != "baseline") mc.pretrained = o.weights;
  models::Classifier model = models::make_model(mc);
  if (!o.weights.empty()) {
    if (mc.arch == "baseline") {
      throw ConfigError(
          "--weights is for transfer models (mobilenetv2, "
          "resnet50v2), not the baseline");
    }
    models::load_keras_backbone(*model, o.weights);
  }

  RunMeta meta;
  meta.model = mc;
  meta.train = o.train;
  meta.positive = ds.index.positive;
  meta.negative = ds.index.negative;
  meta.data = describe_data(ds, o.data);
  meta.data["normalization"] = {
      {"mean", norm.mean}, {"std", norm.std}, {"source", "train+val"}};

  ResumeState resume;
  const bool resuming =
      o.resume && load_resume_state(o.out_dir, *model, &resume);
  if (o.resume && !resuming) {
    if (fs::exists(fs::path(o.out_dir) / "model.pt")) {
      throw ConfigError("--resume: '" + o.out_dir +
                        "' holds a finished run (no state.pt); use another "
                        "--out to train again");
    }
    std::cerr << "cxr: no interrupted run in '" << o.out_dir
              << "', starting afresh\n";
  }
  if (!o.resume && fs::exists(fs::path(o.out_dir) / "state.pt")) {
    throw ConfigError("'" + o.out_dir +
                      "' holds an interrupted run; pass --resume to continue "
                      "it or choose another --out");
  }
  ensure_dir(o.out_dir);
  // Write the config first so an interrupted run is recognisable.
  write_json_atomic(fs::path(o.out_dir) / "config.json", [&] {
    auto j = meta.to_json();
    j["status"] = "training";
    j["created"] = utc_now();
    return j;
  }());

  const data::ImageSet& train_set =
      o.train.train_on == "train+val" ? tv : ds.split(data::Split::kTrain);
  const data::ImageSet* val =
      o.train.train_on == "train+val" ? nullptr : &ds.split(data::Split::kVal);

  std::vector<torch::Tensor> best_for_state;
  auto on_epoch = [&](const TrainState& st) {
    write_history_csv((fs::path(o.out_dir) / "history.csv").string(),
                      st.result->history);
    // Best weights so far: re-snapshot only when the best epoch is the
    // current one (cheap otherwise).
    if (st.result->best_epoch == static_cast<int>(st.result->history.size())) {
      best_for_state = snapshot(*model);
    }
    save_resume_state(o.out_dir, *model, st, best_for_state);
  };
  if (resuming) best_for_state = resume.best_state;
  TrainResult r = fit(*model, train_set, val, o.train, device, on_epoch,
                      resuming ? &resume : nullptr);

  meta.result = {{"best_epoch", r.best_epoch},
                 {"epochs_run", r.history.size()},
                 {"best_val_loss", std::isnan(r.best_val_loss)
                                       ? nlohmann::json(nullptr)
                                       : nlohmann::json(r.best_val_loss)},
                 {"stopped_early", r.stopped_early},
                 {"seconds", r.seconds},
                 {"images_per_second", r.images_per_second()},
                 {"device", device.str()},
                 {"threads", torch::get_num_threads()},
                 {"parameters", models::count_parameters(*model)}};
  if (carried) {
    meta.threshold = carried->value;
    meta.threshold_rule = carried->rule;
  }
  if (val) {
    auto probs = predict_proba(*model, val->images, device);
    auto sc = to_doubles(probs);
    auto lab = to_ints(val->labels);
    if (o.target_sensitivity > 0) {
      meta.threshold =
          metrics::threshold_for_sensitivity(sc, lab, o.target_sensitivity);
      meta.threshold_rule =
          "sensitivity >= " + std::to_string(o.target_sensitivity) +
          " on validation";
    } else if (o.balanced_threshold) {
      meta.threshold = metrics::threshold_youden(sc, lab);
      meta.threshold_rule =
          "balanced on validation (max sensitivity + specificity)";
    }
    auto m = metrics::rates(metrics::confusion(sc, lab, meta.threshold));
    meta.result["val"] = {{"accuracy", m.accuracy},
                          {"precision", m.precision},
                          {"recall", m.recall},
                          {"specificity", m.specificity},
                          {"auc", metrics::roc_auc(sc, lab)},
                          {"threshold", meta.threshold}};
  }
  if (!o.command.empty()) meta.result["command"] = o.command;
  save_run(o.out_dir, *model, meta);
  write_history_csv((fs::path(o.out_dir) / "history.csv").string(), r.history);
  plot_history(r.history, mc.arch,
               (fs::path(o.out_dir) / "curves.png").string(),
               val ? r.best_epoch : 0);
  remove_resume_state(o.out_dir);
  // Calibration, OOD detector and model card (infer/fit_trust.h).
  infer::TrustOptions to;
  to.from = o.train.train_on == "train" ? "" : o.threshold_from;
  to.ood = o.ood;
  to.device = o.device;
  return infer::fit_trust(o.out_dir, to, &ds);
}

}  // namespace cxr::train
