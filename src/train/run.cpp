#include "cxr/train/run.h"

#include <fcntl.h>

#include <cstdio>
#include <iostream>
#include <optional>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/precision.h"
#include "cxr/common/runtime.h"
#include "cxr/common/vectors.h"
#include "cxr/data/stats.h"
#include "cxr/dist/dist.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/metrics/metrics.h"
#include "cxr/models/transfer.h"
#include "cxr/models/weights_file.h"
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
  const int given = (o.target_sensitivity ? 1 : 0) +
                    (o.balanced_threshold ? 1 : 0) +
                    (o.threshold_from.empty() ? 0 : 1);
  if (given > 1) {
    throw ConfigError(
        "give only one of --target-sensitivity, --balanced-threshold and "
        "--threshold-from");
  }
  if (o.target_sensitivity &&
      !(*o.target_sensitivity > 0 && *o.target_sensitivity <= 1)) {
    throw ConfigError("--target-sensitivity must be in (0, 1], e.g. 0.95");
  }
  const bool has_val = o.train.train_on == "train";
  if (!has_val && (o.target_sensitivity || o.balanced_threshold)) {
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

// Settings a resumed run must keep, by the flag that sets them, as JSON
// pointers into run_settings() / saved_settings().
struct ResumeFlag {
  const char* flag;
  const char* pointer;
};
constexpr ResumeFlag kResumeFlags[] = {
    {"--model", "/model/arch"},
    {"--filters", "/model/filters"},
    {"--batch-norm", "/model/batch_norm"},
    {"--dropout", "/model/dropout"},
    {"--head-units", "/model/head_units"},
    {"--weights", "/weights"},
    {"--optimizer", "/train/optimizer"},
    {"--lr", "/train/lr"},
    {"--momentum", "/train/momentum"},
    {"--weight-decay", "/train/weight_decay"},
    {"--batch-size", "/train/batch_size"},
    {"--epochs", "/train/epochs"},
    {"--patience", "/train/patience"},
    {"--lr-patience", "/train/lr_patience"},
    {"--schedule", "/train/schedule"},
    {"--seed", "/train/seed"},
    {"--no-augment", "/train/augment"},
    {"--width-shift", "/train/augmentation/width_shift"},
    {"--rotation", "/train/augmentation/rotation_deg"},
    {"--zoom", "/train/augmentation/zoom"},
    {"--fine-tune-epochs", "/train/fine_tune_epochs"},
    {"--fine-tune-lr", "/train/fine_tune_lr"},
    {"--unfreeze-from", "/train/unfreeze_from"},
    {"--train-on", "/train/train_on"},
    {"--keep", "/train/keep"},
    {"--size", "/data/size"},
    {"--split-seed", "/data/seed"},
    {"--train-fraction", "/data/train_fraction"},
    {"--val-fraction", "/data/val_fraction"},
    {"--positive", "/data/positive"}};

// The options of the interrupted run in `dir`: a flag the user gave must
// agree with the saved value (training on with one value and recording
// another, or failing on a shape mismatch, are both wrong); the rest are
// taken from the saved run.
RunOptions resumed_options(const RunOptions& given, const fs::path& dir) {
  const fs::path cfg = dir / "config.json";
  if (!fs::is_regular_file(cfg)) {
    throw ModelError("--resume: '" + dir.string() +
                     "' has state.pt but no config.json; delete the folder "
                     "to start afresh");
  }
  const RunMeta saved = RunMeta::from_json(read_json(cfg), cfg.string());
  RunOptions r = given;
  r.model = saved.model;
  r.weights =
      models::is_transfer(saved.model.arch) ? saved.model.pretrained : "";
  r.model.pretrained.clear();
  r.train = saved.train;
  r.train.progress = given.train.progress;
  const auto& d = saved.data;
  r.data.size = d.value("size", r.model.input_size);
  r.data.seed = d.value("seed", r.data.seed);
  r.data.train_fraction = d.value("train_fraction", r.data.train_fraction);
  r.data.val_fraction = d.value("val_fraction", r.data.val_fraction);
  r.data.positive = d.value("positive", r.data.positive);
  const nlohmann::json want = run_settings(given), have = run_settings(r);
  for (const auto& f : kResumeFlags) {
    if (!given.flags_given.count(f.flag)) continue;
    const nlohmann::json::json_pointer ptr(f.pointer);
    const auto a = want.value(ptr, nlohmann::json());
    const auto b = have.value(ptr, nlohmann::json());
    if (a != b) {
      if (std::string(f.flag) == "--no-augment") {
        throw ConfigError(
            std::string("--no-augment differs from the resumed run, which ") +
            (b.get<bool>() ? "trains with" : "trains without") +
            " augmentation; resume without it or start a new run");
      }
      throw ConfigError(std::string(f.flag) + " " + flag_text(a) +
                        " differs from the resumed run's " + flag_text(b) +
                        "; resume without it or start a new run");
    }
  }
  return r;
}

// Puts the complete new run `work` in place of `target` (the old run). One
// atomic exchange where the file system supports it, so that a reader never
// sees the folder missing; two renames otherwise.
void swap_in(const fs::path& work, const fs::path& target) {
#ifdef RENAME_EXCHANGE
  if (::renameat2(AT_FDCWD, work.c_str(), AT_FDCWD, target.c_str(),
                  RENAME_EXCHANGE) == 0) {
    std::error_code ec;
    fs::remove_all(work, ec);  // now the old run
    return;
  }
#endif
  const fs::path old = target.string() + ".old";
  std::error_code ec;
  fs::remove_all(old, ec);
  try {
    fs::rename(target, old);
    fs::rename(work, target);
  } catch (const fs::filesystem_error& e) {
    throw IoError("cannot move the new run '" + work.string() + "' to '" +
                  target.string() + "' (" + e.what() +
                  "); the new run is complete in '" + work.string() + "'");
  }
  fs::remove_all(old, ec);
}

}  // namespace

nlohmann::json run_settings(const RunOptions& o) {
  return {{"model", o.model.to_json()},
          {"train", o.train.to_json()},
          {"weights", models::is_transfer(o.model.arch) ? o.weights : ""},
          {"data",
           {{"size", o.data.size},
            {"seed", o.data.seed},
            {"train_fraction", o.data.train_fraction},
            {"val_fraction", o.data.val_fraction},
            {"positive", o.data.positive}}}};
}

// A value as the user would type it: 0.001, 32,64, adam.
std::string flag_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + flag_text(x);
    return s;
  }
  if (v.is_null()) return "(none)";
  return v.dump();
}

std::string flag_of_setting(const std::string& pointer) {
  for (const auto& f : kResumeFlags) {
    if (pointer == f.pointer) return f.flag;
  }
  return "";
}

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

namespace {

/// The dataset a run trains on: `preloaded`, or loaded into `owned`.
const data::Dataset& run_data(const RunOptions& o,
                              const data::Dataset* preloaded,
                              data::Dataset& owned) {
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
  return ds;
}

/// The model with its normalisation (train+val pixel statistics, recorded
/// in `meta`) and, for a transfer backbone, its ImageNet weights.
models::Classifier build_model(const RunOptions& o,
                               const data::Dataset& ds,
                               const data::ImageSet& tv,
                               RunMeta& meta) {
  models::ModelConfig mc = o.model;
  const auto norm = data::pixel_stats(tv.images);
  mc.mean = norm.mean;
  mc.std = norm.std;
  if (models::is_transfer(mc.arch)) mc.pretrained = o.weights;
  models::Classifier model = models::make_model(mc);
  if (!o.weights.empty()) {
    if (!models::is_transfer(mc.arch)) {
      throw ConfigError(
          "--weights is for transfer models (mobilenetv2, "
          "resnet50v2), not the baseline");
    }
    models::load_keras_backbone(*model, o.weights);
  }
  meta.model = mc;
  meta.train = o.train;
  meta.positive = ds.index.positive;
  meta.negative = ds.index.negative;
  meta.data = describe_data(ds, o.data);
  meta.data["normalization"] = {
      {"mean", norm.mean}, {"std", norm.std}, {"source", "train+val"}};
  return model;
}

/// Runs the fit loop with a checkpoint (history.csv, state.pt) after every
/// epoch. A refit that follows a trial's schedule ends where the trial kept
/// its weights: the callback stops fit after that epoch (its state saved).
FitResult fit_with_checkpoints(const RunOptions& o,
                               models::Classifier& model,
                               const data::ImageSet& train_set,
                               const data::ImageSet* val,
                               const torch::Device& device,
                               const ResumeState* resume) {
  struct StopHere {};
  std::optional<FitResult> stopped;
  std::vector<torch::Tensor> best_for_state;
  if (resume) best_for_state = resume->best_state;
  const bool writes = dist::world().is_main();  // rank 0 alone writes
  auto on_epoch = [&](const TrainState& st) {
    if (writes) {
      write_history_csv((fs::path(o.out_dir) / "history.csv").string(),
                        st.result->history);
      // Best weights so far: re-snapshot only when the best epoch is the
      // current one (cheap otherwise).
      if (st.result->best_epoch ==
          static_cast<int>(st.result->history.size())) {
        best_for_state = snapshot(*model);
      }
      save_resume_state(o.out_dir, *model, st, best_for_state);
    }
    if (o.stop_after_epoch > 0 &&
        static_cast<int>(st.result->history.size()) >= o.stop_after_epoch) {
      stopped = *st.result;
      throw StopHere{};
    }
  };
  if (o.stop_after_epoch > 0 && val) {
    throw ConfigError(
        "stopping part-way through the schedule is for a refit on "
        "train+val (with validation, the kept epoch is chosen on it)");
  }
  try {
    return fit(*model, train_set, val, o.train, device, on_epoch, resume);
  } catch (const StopHere&) {
    // Without validation the model holds the last epoch's weights.
    FitResult r = *stopped;
    r.best_epoch = static_cast<int>(r.history.size());
    model->eval();
    return r;
  }
}

/// config.json's "result": what the fit did, where and how fast.
nlohmann::json result_json(const RunOptions& o,
                           const FitResult& r,
                           const torch::Device& device,
                           models::ClassifierImpl& model) {
  return {{"best_epoch", r.best_epoch},
          {"epochs_run", r.history.size()},
          {"best_val_loss", std::isnan(r.best_val_loss)
                                ? nlohmann::json(nullptr)
                                : nlohmann::json(r.best_val_loss)},
          {"stopped_early", r.stopped_early},
          {"stopped_after_epoch", o.stop_after_epoch > 0
                                      ? nlohmann::json(o.stop_after_epoch)
                                      : nlohmann::json(nullptr)},
          {"seconds", r.seconds},
          {"images_per_second", r.images_per_second()},
          {"device", device.str()},
          {"threads", torch::get_num_threads()},
          // --precision: bf16 runs round their forward passes differently.
          {"precision", precision_name(precision())},
          {"parameters", models::count_parameters(model)}};
}

/// The decision threshold (carried over, chosen on validation by the
/// requested rule, or 0.5) and the validation scores at it.
void choose_threshold(const RunOptions& o,
                      const std::optional<ChosenThreshold>& carried,
                      models::ClassifierImpl& model,
                      const data::ImageSet* val,
                      const torch::Device& device,
                      RunMeta& meta) {
  if (carried) {
    meta.threshold = carried->value;
    meta.threshold_rule = carried->rule;
  }
  if (!val) return;
  auto probs = predict_proba(model, val->images, device);
  auto sc = to_doubles(probs);
  auto lab = to_ints(val->labels);
  if (o.target_sensitivity) {
    meta.threshold =
        metrics::threshold_for_sensitivity(sc, lab, *o.target_sensitivity);
    meta.threshold_rule =
        "sensitivity >= " + std::to_string(*o.target_sensitivity) +
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

/// Writes the finished run (model, config, history, curves), fits its
/// calibration, OOD detector and model card (infer/fit_trust.h), and swaps
/// a replacement into `target`. Returns config.json's content.
nlohmann::json write_finished_run(const RunOptions& o,
                                  const fs::path& target,
                                  bool replace,
                                  models::ClassifierImpl& model,
                                  const RunMeta& meta,
                                  const FitResult& r,
                                  bool validated,
                                  const data::Dataset& ds) {
  save_run(o.out_dir, model, meta);
  write_history_csv((fs::path(o.out_dir) / "history.csv").string(), r.history);
  plot_history(r.history, meta.model.arch,
               (fs::path(o.out_dir) / "curves.png").string(),
               validated ? r.best_epoch : 0);
  remove_resume_state(o.out_dir);
  infer::TrustOptions to;
  to.from = o.train.train_on == "train" ? "" : o.threshold_from;
  to.ood = o.ood;
  to.device = o.device;
  auto cfg = infer::fit_trust(o.out_dir, to, &ds);
  if (replace) {
    swap_in(o.out_dir, target);
    // The model card names its folder: write it again under the final name.
    infer::write_model_card(target.string());
  }
  return cfg;
}

// Trains `o` into o.out_dir (the run folder, or its .partial sibling that
// replaces `target` when complete); the caller holds the locks.
nlohmann::json train_locked(const RunOptions& o,
                            const fs::path& target,
                            bool replace,
                            const std::optional<ChosenThreshold>& carried,
                            const data::Dataset* preloaded,
                            FitResult& fitted) {
  const torch::Device device = resolve_device(o.device);
  data::Dataset owned;
  const data::Dataset& ds = run_data(o, preloaded, owned);
  seed_everything(o.train.seed);
  const data::ImageSet tv = ds.train_val();
  RunMeta meta;
  models::Classifier model = build_model(o, ds, tv, meta);

  ResumeState resume;
  const bool resuming =
      o.resume && load_resume_state(o.out_dir, *model, &resume);
  ensure_dir(o.out_dir);
  // Write the config first so an interrupted run is recognisable.
  write_json_atomic(fs::path(o.out_dir) / "config.json", [&] {
    auto j = meta.to_json();
    j["status"] = "training";
    j["created"] = utc_now();
    return j;
  }());

  const bool on_train_val = o.train.train_on == "train+val";
  const data::ImageSet& train_set =
      on_train_val ? tv : ds.split(data::Split::kTrain);
  const data::ImageSet* val =
      on_train_val ? nullptr : &ds.split(data::Split::kVal);
  fitted = fit_with_checkpoints(o, model, train_set, val, device,
                                resuming ? &resume : nullptr);
  meta.result = result_json(o, fitted, device, *model);
  meta.result["world_size"] = dist::world().world_size();
  choose_threshold(o, carried, *model, val, device, meta);
  if (!o.command.empty()) meta.result["command"] = o.command;
  return write_finished_run(o, target, replace, *model, meta, fitted,
                            val != nullptr, ds);
}

/// A distributed job's rank other than 0: it trains its share beside
/// rank 0 and writes nothing (rank 0 checks the folder, writes the run and
/// fits calibration and the OOD detector alone). It resumes from the same
/// state.pt as rank 0 (on many nodes, --out must be a shared folder).
TrainResult train_worker(const RunOptions& given,
                         const data::Dataset* preloaded) {
  fs::path target(given.out_dir);
  if (!target.has_filename()) target = target.parent_path();
  RunOptions o = given;
  const bool resuming = given.resume && fs::exists(target / "state.pt");
  if (resuming) {
    o = resumed_options(given, target);
    o.train.validate();
  }
  o.out_dir = target.string();
  const torch::Device device = resolve_device(o.device);
  data::Dataset owned;
  const data::Dataset& ds = run_data(o, preloaded, owned);
  seed_everything(o.train.seed);
  const data::ImageSet tv = ds.train_val();
  RunMeta meta;
  models::Classifier model = build_model(o, ds, tv, meta);
  ResumeState resume;
  const bool loaded = resuming && load_resume_state(o.out_dir, *model, &resume);
  const bool on_train_val = o.train.train_on == "train+val";
  const data::ImageSet& train_set =
      on_train_val ? tv : ds.split(data::Split::kTrain);
  const data::ImageSet* val =
      on_train_val ? nullptr : &ds.split(data::Split::kVal);
  const FitResult fitted = fit_with_checkpoints(
      o, model, train_set, val, device, loaded ? &resume : nullptr);
  TrainResult r;
  r.run_dir = given.out_dir;
  r.arch = o.model.arch;
  r.best_epoch = fitted.best_epoch;
  r.epochs_run = static_cast<int>(fitted.history.size());
  return r;
}

}  // namespace

TrainResult train_run(const RunOptions& given, const data::Dataset* preloaded) {
  given.train.validate();
  given.ood.validate();
  check_threshold_options(given);
  if (!dist::world().is_main()) return train_worker(given, preloaded);
  if (given.resume && given.overwrite) {
    throw ConfigError(
        "give --resume (continue the interrupted run) or --overwrite "
        "(replace it), not both");
  }
  fs::path target(given.out_dir);
  if (!target.has_filename()) target = target.parent_path();
  const bool existed = fs::exists(target);
  // One writer per run folder, for the whole command.
  const DirLock lock(target.string());
  // A run that fails before writing anything leaves no folder behind (only
  // the lock file would be there); a failed replacement leaves no .partial.
  auto clean_up = [&](const fs::path& work) {
    std::error_code ec;
    if (work != target) fs::remove_all(work, ec);
    if (!existed) remove_if_only_lock(target.string());
  };
  const bool has_state = fs::exists(target / "state.pt");
  // A finished run: its weights (model.pt in folders of older versions).
  const bool has_model = fs::exists(target / models::kWeightsFile) ||
                         fs::exists(target / "model.pt");
  RunOptions o = given;
  if (given.resume && has_state) {
    o = resumed_options(given, target);
    o.train.validate();
  } else if (given.resume) {
    if (has_model) {
      throw ConfigError("--resume: '" + given.out_dir +
                        "' holds a finished run (no state.pt); use another "
                        "--out to train again, or --overwrite to replace it");
    }
    std::cerr << "cxr: no interrupted run in '" << given.out_dir
              << "', starting afresh\n";
  } else if (has_state && !given.overwrite) {
    throw ConfigError("'" + given.out_dir +
                      "' holds an interrupted run; pass --resume to continue "
                      "it, --overwrite to replace it, or choose another --out");
  } else if (has_model && !given.overwrite) {
    throw ConfigError("'" + given.out_dir +
                      "' holds a finished run; pass --overwrite to replace it "
                      "(the old run stays until the new one is complete) or "
                      "choose another --out");
  }
  const auto carried = check_threshold_options(o);
  // Replacing a run: the new one is written beside it and swapped in when
  // complete, so an interrupted retrain leaves the old run whole and a
  // reader never pairs a new config.json with old weights.
  std::optional<DirLock> work_lock;
  if (!given.resume && (has_state || has_model)) {
    const fs::path work =
        target.parent_path() / (target.filename().string() + ".partial");
    std::error_code ec;
    fs::remove_all(work, ec);  // left by an interrupted --overwrite
    work_lock.emplace(work.string());
    o.out_dir = work.string();
  } else {
    o.out_dir = target.string();
  }
  try {
    FitResult fitted;
    auto r =
        TrainResult::from_config(train_locked(o, target, work_lock.has_value(),
                                              carried, preloaded, fitted),
                                 given.out_dir);
    for (const auto& e : fitted.history) {
      if (e.phase == "frozen") ++r.frozen_epochs;
    }
    return r;
  } catch (...) {
    clean_up(o.out_dir);
    throw;
  }
}

}  // namespace cxr::train
