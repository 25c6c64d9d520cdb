#include "cxr/study/study.h"

#include <chrono>
#include <functional>
#include <iostream>
#include <sstream>

#include "cxr/augment/augment.h"
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/precision.h"
#include "cxr/common/progress.h"
#include "cxr/common/runtime.h"
#include "cxr/data/explore.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/evaluate/ood_sets.h"
#include "cxr/explain/explain.h"
#include "cxr/models/keras_h5.h"
#include "cxr/report/report.h"
#include "cxr/train/run_dir.h"
#include "cxr/tune/tune.h"
#include "cxr/version.h"

namespace fs = std::filesystem;

namespace cxr::study {
namespace {

/// Bumped whenever the plan or a recipe changes, so that a study folder
/// made by an older cxr is not silently resumed with mixed recipes.
// 3: refits stop at the best epoch; 4: MobileNetV2 fine-tunes from
// block_6_expand on (docs/study.md, "Recipe version 4").
constexpr int kRecipeVersion = 4;

/// The MobileNetV2 weights are needed at the transfer step, after the
/// baseline's tuning: check them now, not 20 minutes in. Reads only the
/// file's layer list (not the weights).
void check_weights(const StudyOptions& o) {
  if (!o.transfer) return;
  if (o.weights.empty()) {
    if (o.random_init) return;
    throw ConfigError(
        "no MobileNetV2 ImageNet weights: the default "
        "../shared/weights/mobilenet_v2_1.0_224_imagenet_notop.h5 was not "
        "found; pass --weights FILE.h5, or --no-weights to train MobileNetV2 "
        "from random initialisation, or --no-transfer to skip it");
  }
  if (o.random_init) {
    throw ConfigError("--weights " + o.weights +
                      " and --no-weights contradict each other; give one");
  }
  const auto names = models::read_keras_layer_names(o.weights);
  for (const char* layer : {"Conv1", "block_16_project", "Conv_1"}) {
    if (std::find(names.begin(), names.end(), layer) == names.end()) {
      throw ModelError("weights file '" + o.weights + "' has no layer '" +
                       layer +
                       "': not Keras MobileNetV2 weights; pass "
                       "mobilenet_v2_1.0_224_imagenet_notop.h5 (or the "
                       "file with the top) as --weights");
    }
  }
}

/// The baseline's search and its refit start from the same options.
train::RunOptions baseline_base(const Plan& plan,
                                const StudyOptions& o,
                                const data::DatasetOptions& data) {
  train::RunOptions b;
  b.data = data;
  b.model.arch = "baseline";
  b.model.input_size = plan.size;
  b.model.filters = plan.baseline_filters;
  b.train.epochs = plan.baseline_epochs;
  b.train.schedule = plan.schedule;
  b.train.patience = 0;  // the whole schedule; best val epoch kept
  b.device = o.device;
  return b;
}

/// The MobileNetV2 recipe: `frozen` epochs of the head at lr 1e-3, then
/// `fine_tune` epochs at lr 1e-4 of the backbone from `unfreeze_from` on
/// and the head, each phase on a cosine schedule. On train the schedule's last
/// epoch is kept (as in the refit) and the balanced threshold is chosen on
/// validation; the refit on train+val, with no validation left, carries that
/// threshold over.
train::RunOptions transfer_recipe(const Plan& plan,
                                  const StudyOptions& o,
                                  const data::DatasetOptions& data,
                                  bool refit) {
  train::RunOptions ro;
  ro.data = data;
  ro.model.arch = "mobilenetv2";
  ro.model.input_size = plan.transfer_size;
  ro.model.dropout = 0.3;
  ro.weights = o.weights;
  ro.train.lr = 1e-3;
  ro.train.epochs = plan.frozen_epochs;
  ro.train.fine_tune_epochs = plan.fine_tune_epochs;
  ro.train.fine_tune_lr = 1e-4;
  // From random initialisation no block has anything worth keeping.
  ro.train.unfreeze_from = o.random_init ? "" : plan.unfreeze_from;
  ro.train.schedule = "cosine";
  ro.train.patience = 0;
  ro.train.train_on = refit ? "train+val" : "train";
  ro.train.keep = "last";
  if (refit) {
    ro.threshold_from = (fs::path(o.out_dir) / "mobilenetv2").string();
  } else {
    ro.balanced_threshold = true;
  }
  ro.train.progress = o.progress;
  ro.device = o.device;
  return ro;
}

/// The study's options as study.json records them: every setting that
/// shapes a step's result. A finished step is not redone unless it was
/// made with other options.
nlohmann::json options_fingerprint(const StudyOptions& o) {
  nlohmann::json fp = {
      {"data", fs::absolute(o.data.root).lexically_normal().string()},
      {"size", o.data.size},
      {"split_seed", o.data.seed},
      {"train_fraction", o.data.train_fraction},
      {"val_fraction", o.data.val_fraction},
      {"positive", o.data.positive},
      {"skip_bad", o.data.skip_bad},
      {"random_init", o.random_init},
      {"shared", o.shared_dir.empty()
                     ? std::string()
                     : fs::absolute(o.shared_dir).lexically_normal().string()},
      {"quick", o.quick},
      {"full_grid", o.full_grid},
      {"weights", o.weights},
      {"transfer", o.transfer},
      {"transfer_size", o.transfer_size},
      {"recipe", kRecipeVersion}};
  // --precision is a runtime setting, but bf16 steps are not fp32 steps: a
  // resumed study must not mix them. Recorded only when not fp32, so study
  // folders made before the option existed (all fp32) still resume.
  if (precision() != Precision::kFloat32) {
    fp["precision"] = precision_name(precision());
  }
  return fp;
}

/// The models every later step evaluates, explains and reports.
nlohmann::json study_models(const StudyOptions& o) {
  nlohmann::json models = nlohmann::json::array();
  models.push_back(
      {{"name", "Baseline CNN (refit on train+val)"}, {"run", "baseline"}});
  if (o.transfer) {
    const std::string mn = std::string("MobileNetV2 ") +
                           (o.random_init ? "(random init)" : "(ImageNet)") +
                           " frozen -> fine-tuned";
    models.push_back({{"name", mn + " (train; threshold chosen on val)"},
                      {"run", "mobilenetv2"}});
    models.push_back({{"name", mn + " (refit on train+val; threshold of the "
                                    "train run)"},
                      {"run", "mobilenetv2-refit"}});
  }
  return models;
}

/// Grad-CAM examples: up to `examples` test images, half of each class
/// (the split is sorted by class), positives first.
std::vector<std::string> example_inputs(const data::ImageSet& test,
                                        int examples) {
  std::vector<std::string> inputs;
  const int per_class = std::max(1, examples / 2);
  for (int label : {1, 0}) {
    int taken = 0;
    for (int64_t i = 0; i < test.size() && taken < per_class; ++i) {
      if (static_cast<int>(test.labels[i].item<float>()) == label) {
        inputs.push_back(test.paths[static_cast<size_t>(i)]);
        ++taken;
      }
    }
  }
  return inputs;
}

double minutes_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
             .count() /
         60.0;
}

/// One run of the study: its folder, study.json, and the steps in order
/// (each skipped when study.json records it done).
class Study {
 public:
  Study(const StudyOptions& o, std::chrono::steady_clock::time_point t0)
      : o_(o), plan_(make_plan(o)), out_(o.out_dir), t0_(t0) {}

  /// Reads study.json (refusing one made with other options) and records
  /// this run's options, version and device.
  void open() {
    const fs::path sjp = out_ / "study.json";
    sj_ = fs::exists(sjp) ? read_json(sjp) : nlohmann::json::object();
    const torch::Device device = resolve_device(o_.device);
    const nlohmann::json fingerprint = options_fingerprint(o_);
    if (sj_.contains("options") && sj_["options"] != fingerprint) {
      throw ConfigError(
          "'" + o_.out_dir +
          "' holds a study made with other options or an older recipe (" +
          sj_["options"].dump() + "); use another --out or delete it");
    }
    sj_["options"] = fingerprint;
    sj_["data"] = o_.data.root;
    sj_["cxr_version"] = kVersion;
    sj_["device"] = device.str() + ", " +
                    std::to_string(torch::get_num_threads()) + " threads, " +
                    precision_name(precision());
    if (!sj_.contains("steps")) sj_["steps"] = nlohmann::json::object();
    prior_minutes_ = sj_.value("minutes_total", 0.0);
    save();
  }

  StudyResult run() {
    // Data at the baseline's size; the transfer model gets its own size.
    dopt_ = o_.data;
    dopt_.size = plan_.size;
    ds_ = data::load_dataset(dopt_);
    step("explore", [&] { explore(); });
    step("tune-baseline", [&] { tune_baseline(); });
    step("baseline-refit", [&] { refit_baseline(); });
    if (o_.transfer) transfer_steps();
    models_ = study_models(o_);
    sj_["models"] = models_;
    sj_["tuning"] =
        nlohmann::json::array({{{"name", "baseline CNN"}, {"dir", kTuneDir}}});
    step("evaluate", [&] { evaluate_models(); });
    // The OOD warning on photos, other body parts, rotated, inverted,
    // cropped and blurred films, noise and text (evaluate/ood_sets.h).
    step("ood-sets", [&] { evaluate_ood_sets(); });
    step("explain", [&] { explain_models(); });
    sj_["finished"] = train::utc_now();
    sj_["minutes"] = prior_minutes_ + minutes_since(t0_);
    save();
    step("report", [&] { write_report(); });
    sj_["minutes_total"] = sj_["minutes"];
    save();
    StudyResult r;
    r.out_dir = o_.out_dir;
    r.minutes = sj_["minutes"].get<double>();
    r.report_path = (out_ / "report.html").string();
    r.study = sj_;
    return r;
  }

 private:
  static constexpr const char* kTuneDir = "tune-baseline";
  static constexpr int kSteps = 9;  // explore ... report

  void save() {
    sj_["minutes_total_this_run"] = minutes_since(t0_);
    write_json_atomic(out_ / "study.json", sj_);
  }

  void step(const std::string& name, const std::function<void()>& fn) {
    ++step_no_;
    const std::string label =
        "[" + std::to_string(step_no_) + "/" + std::to_string(kSteps) + "] ";
    if (sj_["steps"].contains(name) &&
        sj_["steps"][name].value("done", false)) {
      if (o_.progress) {
        std::cerr << label << name << ": done earlier, skipped\n";
      }
      return;
    }
    const auto ts = std::chrono::steady_clock::now();
    if (o_.progress) {
      const double el = std::chrono::duration<double>(ts - t0_).count();
      std::cerr << label << name << "  (study time " << format_duration(el)
                << ")\n";
    }
    fn();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
            .count();
    sj_["steps"][name] = {{"done", true}, {"seconds", secs}};
    save();
  }

  void explore() {
    data::ExploreOptions eo;
    eo.out_dir = (out_ / "explore").string();
    auto summary = data::explore(ds_, eo);
    augment::write_preview(ds_.split(data::Split::kTrain).images, {},
                           (out_ / "explore" / "augment.png").string());
    if (o_.progress) std::cerr << data::format_summary(summary);
  }

  void tune_baseline() {
    tune::TuneOptions to;
    to.space = tune::parse_space(plan_.baseline_grid);
    to.out_dir = (out_ / kTuneDir).string();
    to.base = baseline_base(plan_, o_, dopt_);
    to.budget_minutes = plan_.tune_budget_minutes;
    to.progress = o_.progress;
    tune::run_tune(to, &ds_);
  }

  void refit_baseline() {
    const auto best = tune::TrialResult::from_json(
        read_json(out_ / kTuneDir / "best.json")["best"]);
    // The best configuration on train+val, by the one refit rule of `cxr
    // tune --refit` (tune::refit_options): the trial's schedule, stopped at
    // its best epoch, with its threshold (0.5) and calibration temperature.
    train::RunOptions ro =
        tune::refit_options(baseline_base(plan_, o_, dopt_), best);
    ro.train.progress = o_.progress;
    ro.out_dir = (out_ / "baseline").string();
    std::error_code ec;
    fs::remove_all(ro.out_dir, ec);
    train::train_run(ro, &ds_);
  }

  void transfer_steps() {
    data::DatasetOptions topt = o_.data;
    topt.size = plan_.transfer_size;
    // Loaded once, only if a transfer step still has to run.
    data::Dataset tds;
    auto transfer_data = [&]() -> const data::Dataset& {
      if (topt.size == dopt_.size) return ds_;
      if (tds.splits.empty()) tds = data::load_dataset(topt);
      return tds;
    };
    for (bool refit : {false, true}) {
      step(refit ? "transfer-refit" : "transfer", [&] {
        train::RunOptions ro = transfer_recipe(plan_, o_, topt, refit);
        ro.out_dir =
            (out_ / (refit ? "mobilenetv2-refit" : "mobilenetv2")).string();
        std::error_code ec;
        fs::remove_all(ro.out_dir, ec);
        train::train_run(ro, &transfer_data());
      });
    }
  }

  std::string run_of(const nlohmann::json& model) const {
    return (out_ / model.at("run").get<std::string>()).string();
  }

  void evaluate_models() {
    for (const auto& m : models_) {
      evaluate::EvalOptions eo;
      eo.run_dir = run_of(m);
      eo.split = "test";
      eo.bootstrap = plan_.bootstrap;
      eo.device = o_.device;
      eo.cache_dir = o_.data.cache_dir;
      eo.data_root = o_.data.root;
      const auto r = evaluate::evaluate_run(eo);
      if (o_.progress) std::cerr << evaluate::format_summary(r);
    }
  }

  void evaluate_ood_sets() {
    for (const auto& m : models_) {
      evaluate::OodEvalOptions oo;
      oo.run_dir = run_of(m);
      oo.shared_dir = o_.shared_dir;
      oo.data_root = o_.data.root;
      oo.device = o_.device;
      auto j = evaluate::evaluate_ood(oo);
      if (o_.progress) std::cerr << evaluate::format_ood(j);
    }
  }

  void explain_models() {
    for (const auto& m : models_) {
      const fs::path run = run_of(m);
      for (bool mis : {false, true}) {
        explain::ExplainOptions eo;
        eo.run_dir = run.string();
        if (mis) {
          eo.split = "test";
          eo.misclassified = true;
        } else {
          eo.inputs = example_inputs(ds_.split(data::Split::kTest),
                                     plan_.explain_examples);
        }
        eo.trust = true;
        eo.data_root = o_.data.root;
        eo.cache_dir = o_.data.cache_dir;
        eo.device = o_.device;
        eo.progress = o_.progress;
        eo.out_dir =
            (run / (mis ? "explain-misclassified" : "explain-examples"))
                .string();
        std::error_code ec;
        fs::remove_all(eo.out_dir, ec);
        explain::explain_run(eo);
      }
    }
  }

  void write_report() {
    report::ReportOptions ro;
    ro.inputs = {o_.out_dir};
    ro.out_path = (out_ / "report.html").string();
    report::write_report(ro);
  }

  const StudyOptions& o_;
  const Plan plan_;
  const fs::path out_;
  const std::chrono::steady_clock::time_point t0_;
  nlohmann::json sj_;
  double prior_minutes_ = 0;
  int step_no_ = 0;
  data::DatasetOptions dopt_;
  data::Dataset ds_;
  nlohmann::json models_;
};

}  // namespace

Plan make_plan(const StudyOptions& o) {
  Plan p;
  if (o.quick) {
    p.size = 64;
    p.baseline_grid = {"lr=1e-3"};
    p.baseline_filters = {8, 16, 32};
    p.baseline_epochs = 2;
    p.schedule = "cosine";
    p.tune_budget_minutes = std::nullopt;
    p.transfer_size = 64;
    p.frozen_epochs = 1;
    p.fine_tune_epochs = 1;
    p.unfreeze_from = "block_6_expand";
    p.explain_examples = 2;
    p.bootstrap = 200;
    return p;
  }
  p.size = o.data.size;
  p.baseline_grid = {"lr=1e-3,3e-4"};
  p.baseline_filters = {16, 32, 64, 128, 256};
  p.baseline_epochs = 30;
  p.schedule = "cosine";
  p.tune_budget_minutes = 12.0;
  p.transfer_size = o.transfer_size;
  p.frozen_epochs = 3;
  p.fine_tune_epochs = 20;
  // Blocks 0-5 (the 112, 56 and 28 px stages) keep their ImageNet weights:
  // their backward pass is most of a full fine-tuning step's time, and on
  // validation the recipe held (docs/study.md, recipe version 4).
  p.unfreeze_from = "block_6_expand";
  p.explain_examples = 6;
  p.bootstrap = 2000;
  if (o.full_grid) {
    p.baseline_grid = {"filters=8,32,64", "dropout=0.4,0.3,0.2",
                       "lr=1e-3,1e-4,1e-5", "optimizer=adam,sgd"};
    p.tune_budget_minutes = std::nullopt;
  }
  return p;
}

std::string default_weights() {
  for (const char* c :
       {"../shared/weights/mobilenet_v2_1.0_224_imagenet_notop.h5",
        "shared/weights/mobilenet_v2_1.0_224_imagenet_notop.h5"}) {
    if (fs::exists(c)) return c;
  }
  return "";
}

std::string format_summary(const StudyResult& r) {
  std::ostringstream s;
  s << "study finished in " << r.minutes << " min; report: " << r.out_dir
    << "/report.html\n";
  return s.str();
}

StudyResult run_study(const StudyOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(o.out_dir);
  // One writer per study folder, for the whole study.
  const train::DirLock lock(out.string());
  // The inputs, before any step: the data folder (listed, not decoded: a
  // missing one is named first) and the MobileNetV2 weights.
  data::index_dataset(o.data);
  check_weights(o);
  Study study(o, t0);
  study.open();
  return study.run();
}

}  // namespace cxr::study
