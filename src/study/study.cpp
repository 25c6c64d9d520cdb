#include "cxr/study/study.h"

#include <iostream>

#include "cxr/augment/augment.h"
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
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

/// The default study's recipes, chosen on validation in GPU sessions that
/// tried each candidate with three seeds (docs/study.md, docs/gpu-runs.md),
/// sized to finish in about an hour on a 2-core CPU.
struct Plan {
  int size;
  std::vector<std::string> baseline_grid;
  std::vector<int> baseline_filters;
  int baseline_epochs;
  std::string schedule;
  double tune_budget_minutes;
  int transfer_size;
  int frozen_epochs;
  int fine_tune_epochs;
  int explain_examples;
  int bootstrap;
};

/// Bumped whenever the plan or a recipe changes, so that a study folder
/// made by an older cxr is not silently resumed with mixed recipes.
constexpr int kRecipeVersion = 3;  // 3: refits stop at the best epoch

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

Plan make_plan(const StudyOptions& o) {
  if (o.quick) {
    return {64, {"lr=1e-3"}, {8, 16, 32}, 2, "cosine", 0, 64, 1, 1, 2, 200};
  }
  Plan p{o.data.size,
         {"lr=1e-3,3e-4"},
         {16, 32, 64, 128, 256},
         30,
         "cosine",
         12.0,
         o.transfer_size,
         3,
         20,
         6,
         2000};
  if (o.full_grid) {
    p.baseline_grid = {"filters=8,32,64", "dropout=0.4,0.3,0.2",
                       "lr=1e-3,1e-4,1e-5", "optimizer=adam,sgd"};
    p.tune_budget_minutes = 0;
  }
  return p;
}

/// The MobileNetV2 recipe: `frozen` epochs of the head at lr 1e-3, then
/// `fine_tune` epochs of everything at lr 1e-4, each phase on a cosine
/// schedule. On train the schedule's last epoch is kept (as in the refit)
/// and the balanced threshold is chosen on validation; the refit on
/// train+val, with no validation left, carries that threshold over.
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

}  // namespace

nlohmann::json run_study(const StudyOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(o.out_dir);
  // One writer per study folder, for the whole study.
  const train::DirLock lock(out.string());
  // The inputs, before any step: the data folder (listed, not decoded: a
  // missing one is named first) and the MobileNetV2 weights.
  data::index_dataset(o.data);
  check_weights(o);
  const fs::path sjp = out / "study.json";
  nlohmann::json sj =
      fs::exists(sjp) ? read_json(sjp) : nlohmann::json::object();
  const Plan plan = make_plan(o);
  const torch::Device device = resolve_device(o.device);
  // A finished step is not redone, unless it was made with other options.
  // Every setting that shapes a step's result.
  const nlohmann::json fingerprint = {
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
  if (sj.contains("options") && sj["options"] != fingerprint) {
    throw ConfigError(
        "'" + o.out_dir +
        "' holds a study made with other options or an older recipe (" +
        sj["options"].dump() + "); use another --out or delete it");
  }
  sj["options"] = fingerprint;
  sj["data"] = o.data.root;
  sj["cxr_version"] = kVersion;
  sj["device"] = device.str() + ", " +
                 std::to_string(torch::get_num_threads()) + " threads";
  if (!sj.contains("steps")) sj["steps"] = nlohmann::json::object();
  const double prior_minutes = sj.value("minutes_total", 0.0);
  auto save = [&] {
    sj["minutes_total_this_run"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count() /
        60.0;
    write_json_atomic(sjp, sj);
  };
  const std::vector<std::string> steps = {
      "explore",  "tune-baseline",  "baseline-refit",
      "transfer", "transfer-refit", "evaluate",
      "ood-sets", "explain",        "report"};
  int step_no = 0;
  auto run_step = [&](const std::string& name,
                      const std::function<void()>& fn) {
    ++step_no;
    if (sj["steps"].contains(name) && sj["steps"][name].value("done", false)) {
      if (o.progress) {
        std::cerr << "[" << step_no << "/" << steps.size() << "] " << name
                  << ": done earlier, skipped\n";
      }
      return;
    }
    const auto ts = std::chrono::steady_clock::now();
    if (o.progress) {
      const double el = std::chrono::duration<double>(ts - t0).count();
      std::cerr << "[" << step_no << "/" << steps.size() << "] " << name
                << "  (study time " << format_duration(el) << ")\n";
    }
    fn();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
            .count();
    sj["steps"][name] = {{"done", true}, {"seconds", secs}};
    save();
  };
  save();

  // Data at the baseline's size; the transfer model gets its own size.
  data::DatasetOptions dopt = o.data;
  dopt.size = plan.size;
  data::Dataset ds = data::load_dataset(dopt);

  run_step("explore", [&] {
    data::ExploreOptions eo;
    eo.out_dir = (out / "explore").string();
    auto summary = data::explore(ds, eo);
    augment::write_preview(ds.split(data::Split::kTrain).images, {},
                           (out / "explore" / "augment.png").string());
    if (o.progress) std::cerr << data::format_summary(summary);
  });

  const std::string tune_dir = "tune-baseline";
  run_step("tune-baseline", [&] {
    tune::TuneOptions to;
    to.space = tune::parse_space(plan.baseline_grid);
    to.out_dir = (out / tune_dir).string();
    to.base = baseline_base(plan, o, dopt);
    to.budget_minutes = plan.tune_budget_minutes;
    to.progress = o.progress;
    tune::run_tune(to, &ds);
  });

  run_step("baseline-refit", [&] {
    const auto best = tune::TrialResult::from_json(
        read_json(out / tune_dir / "best.json")["best"]);
    // The best configuration on train+val, by the one refit rule of `cxr
    // tune --refit` (tune::refit_options): the trial's schedule, stopped at
    // its best epoch, with its threshold (0.5) and calibration temperature.
    train::RunOptions ro =
        tune::refit_options(baseline_base(plan, o, dopt), best);
    ro.train.progress = o.progress;
    ro.out_dir = (out / "baseline").string();
    std::error_code ec;
    fs::remove_all(ro.out_dir, ec);
    train::train_run(ro, &ds);
  });

  if (o.transfer) {
    data::DatasetOptions topt = o.data;
    topt.size = plan.transfer_size;
    // Loaded once, only if a transfer step still has to run.
    data::Dataset tds;
    auto transfer_data = [&]() -> const data::Dataset& {
      if (topt.size == dopt.size) return ds;
      if (tds.splits.empty()) tds = data::load_dataset(topt);
      return tds;
    };
    for (bool refit : {false, true}) {
      run_step(refit ? "transfer-refit" : "transfer", [&] {
        train::RunOptions ro = transfer_recipe(plan, o, topt, refit);
        ro.out_dir =
            (out / (refit ? "mobilenetv2-refit" : "mobilenetv2")).string();
        std::error_code ec;
        fs::remove_all(ro.out_dir, ec);
        train::train_run(ro, &transfer_data());
      });
    }
  }

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
  sj["models"] = models;
  sj["tuning"] =
      nlohmann::json::array({{{"name", "baseline CNN"}, {"dir", tune_dir}}});

  run_step("evaluate", [&] {
    for (const auto& m : models) {
      evaluate::EvalOptions eo;
      eo.run_dir = (out / m["run"].get<std::string>()).string();
      eo.split = "test";
      eo.bootstrap = plan.bootstrap;
      eo.device = o.device;
      eo.cache_dir = o.data.cache_dir;
      eo.data_root = o.data.root;
      auto j = evaluate::evaluate_run(eo);
      if (o.progress) std::cerr << evaluate::format_metrics(j);
    }
  });

  // The OOD warning on photos, other body parts, rotated, inverted,
  // cropped and blurred films, noise and text (evaluate/ood_sets.h).
  run_step("ood-sets", [&] {
    for (const auto& m : models) {
      evaluate::OodEvalOptions oo;
      oo.run_dir = (out / m["run"].get<std::string>()).string();
      oo.shared_dir = o.shared_dir;
      oo.data_root = o.data.root;
      oo.device = o.device;
      auto j = evaluate::evaluate_ood(oo);
      if (o.progress) std::cerr << evaluate::format_ood(j);
    }
  });

  run_step("explain", [&] {
    for (const auto& m : models) {
      const fs::path run = out / m["run"].get<std::string>();
      for (bool mis : {false, true}) {
        explain::ExplainOptions eo;
        eo.run_dir = run.string();
        if (mis) {
          eo.split = "test";
          eo.misclassified = true;
        } else {
          // Examples of both classes (the split is sorted by class).
          const auto& test = ds.split(data::Split::kTest);
          const int per_class = std::max(1, plan.explain_examples / 2);
          for (int label : {1, 0}) {
            int taken = 0;
            for (int64_t i = 0; i < test.size() && taken < per_class; ++i) {
              if (static_cast<int>(test.labels[i].item<float>()) == label) {
                eo.inputs.push_back(test.paths[static_cast<size_t>(i)]);
                ++taken;
              }
            }
          }
        }
        eo.trust = true;
        eo.data_root = o.data.root;
        eo.cache_dir = o.data.cache_dir;
        eo.device = o.device;
        eo.progress = o.progress;
        eo.out_dir =
            (run / (mis ? "explain-misclassified" : "explain-examples"))
                .string();
        std::error_code ec;
        fs::remove_all(eo.out_dir, ec);
        explain::explain_run(eo);
      }
    }
  });

  sj["finished"] = train::utc_now();
  sj["minutes"] = prior_minutes + std::chrono::duration<double>(
                                      std::chrono::steady_clock::now() - t0)
                                          .count() /
                                      60.0;
  save();
  run_step("report", [&] {
    report::ReportOptions ro;
    ro.inputs = {o.out_dir};
    ro.out_path = (out / "report.html").string();
    report::write_report(ro);
  });
  sj["minutes_total"] = sj["minutes"];
  save();
  return sj;
}

}  // namespace cxr::study
