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
#include "run_settings.h"

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

/// What every rank trains from, set up the same way on each: the device,
/// the data, the model (normalised on train+val, `meta` filled in), the set
/// it fits on and the validation set (none when training on train+val).
/// Holds pointers into itself: neither copied nor moved.
struct Setup {
  Setup(const RunOptions& o, const data::Dataset* preloaded)
      : device(resolve_device(o.device)), ds(run_data(o, preloaded, owned)) {
    seed_everything(o.train.seed);
    tv = ds.train_val();
    model = build_model(o, ds, tv, meta);
    const bool on_train_val = o.train.train_on == "train+val";
    train_set = on_train_val ? &tv : &ds.split(data::Split::kTrain);
    val = on_train_val ? nullptr : &ds.split(data::Split::kVal);
  }
  Setup(const Setup&) = delete;
  Setup& operator=(const Setup&) = delete;

  torch::Device device;
  data::Dataset owned;  // the data when not preloaded
  const data::Dataset& ds;
  data::ImageSet tv;  // train+val
  RunMeta meta;
  models::Classifier model;
  const data::ImageSet* train_set = nullptr;
  const data::ImageSet* val = nullptr;
};

/// The run folder --out names ("runs/a/" is "runs/a").
fs::path run_folder(const std::string& out_dir) {
  fs::path target(out_dir);
  if (!target.has_filename()) target = target.parent_path();
  return target;
}

// Trains `o` into o.out_dir (the run folder, or its .partial sibling that
// replaces `target` when complete); the caller holds the locks.
nlohmann::json train_locked(const RunOptions& o,
                            const fs::path& target,
                            bool replace,
                            const std::optional<ChosenThreshold>& carried,
                            const data::Dataset* preloaded,
                            FitResult& fitted) {
  Setup s(o, preloaded);
  ResumeState resume;
  const bool resuming =
      o.resume && load_resume_state(o.out_dir, *s.model, &resume);
  ensure_dir(o.out_dir);
  // Write the config first so an interrupted run is recognisable.
  write_json_atomic(fs::path(o.out_dir) / "config.json", [&] {
    auto j = s.meta.to_json();
    j["status"] = "training";
    j["created"] = utc_now();
    return j;
  }());

  fitted = fit_with_checkpoints(o, s.model, *s.train_set, s.val, s.device,
                                resuming ? &resume : nullptr);
  s.meta.result = result_json(o, fitted, s.device, *s.model);
  s.meta.result["world_size"] = dist::world().world_size();
  choose_threshold(o, carried, *s.model, s.val, s.device, s.meta);
  if (!o.command.empty()) s.meta.result["command"] = o.command;
  return write_finished_run(o, target, replace, *s.model, s.meta, fitted,
                            s.val != nullptr, s.ds);
}

/// A distributed job's rank other than 0: it trains its share beside
/// rank 0 and writes nothing (rank 0 checks the folder, writes the run and
/// fits calibration and the OOD detector alone). It resumes from the same
/// state.pt as rank 0 (on many nodes, --out must be a shared folder).
TrainResult train_worker(const RunOptions& given,
                         const data::Dataset* preloaded) {
  const fs::path target = run_folder(given.out_dir);
  RunOptions o = given;
  const bool resuming = given.resume && fs::exists(target / "state.pt");
  if (resuming) {
    o = detail::resumed_options(given, target);
    o.train.validate();
  }
  o.out_dir = target.string();
  Setup s(o, preloaded);
  ResumeState resume;
  const bool loaded =
      resuming && load_resume_state(o.out_dir, *s.model, &resume);
  const FitResult fitted = fit_with_checkpoints(
      o, s.model, *s.train_set, s.val, s.device, loaded ? &resume : nullptr);
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
  const fs::path target = run_folder(given.out_dir);
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
    o = detail::resumed_options(given, target);
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
