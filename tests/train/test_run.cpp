// train_run's decision thresholds: chosen on validation (balanced or for a
// sensitivity), carried over to a refit, and refused where validation is not
// held out. Also evaluate's threshold rules. On a tiny PNG dataset.
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/metrics/metrics.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;
namespace fs = std::filesystem;

cxr::train::RunOptions tiny_run(const fs::path& dir, const std::string& out) {
  return cxr::testing::tiny_run_options(dir, out);
}

void expect_config_error(const std::function<void()>& fn,
                         const std::string& needle) {
  try {
    fn();
    FAIL() << "expected ConfigError naming " << needle;
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << e.what();
  }
}

TEST(RunThreshold, BalancedOnValidationThenCarriedToTheRefit) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_run(dir.path(), "train");
  o.balanced_threshold = true;
  o.train.keep = "last";
  auto cfg = cxr::train::train_run(o).to_json();
  const double t = cfg["threshold"]["value"].get<double>();
  EXPECT_NE(cfg["threshold"]["rule"].get<std::string>().find("balanced"),
            std::string::npos);
  EXPECT_EQ(cfg["train"]["keep"], "last");
  EXPECT_EQ(cfg["result"]["best_epoch"], 2);

  // The recorded threshold is the balanced one of the saved model's
  // validation scores.
  const torch::Device cpu(torch::kCPU);
  auto run = cxr::train::load_run(o.out_dir, cpu);
  auto ds = cxr::data::load_dataset(o.data);
  const auto& val = ds.split(cxr::data::Split::kVal);
  auto p = cxr::train::predict_proba(*run.model, val.images, cpu)
               .to(torch::kFloat64)
               .contiguous();
  auto y = val.labels.to(torch::kInt32).contiguous();
  const std::vector<double> sc(p.data_ptr<double>(),
                               p.data_ptr<double>() + p.numel());
  const std::vector<int> lab(y.data_ptr<int>(), y.data_ptr<int>() + y.numel());
  EXPECT_NEAR(t, cxr::metrics::threshold_youden(sc, lab), 1e-6);

  auto r = tiny_run(dir.path(), "refit");
  r.train.train_on = "train+val";
  r.threshold_from = o.out_dir;
  auto rc = cxr::train::train_run(r).to_json();
  EXPECT_DOUBLE_EQ(rc["threshold"]["value"].get<double>(), t);
  const auto rule = rc["threshold"]["rule"].get<std::string>();
  EXPECT_NE(rule.find("balanced"), std::string::npos) << rule;
  EXPECT_NE(rule.find(o.out_dir), std::string::npos) << rule;

  // evaluate uses the run's threshold unless told otherwise.
  cxr::evaluate::EvalOptions e;
  e.run_dir = r.out_dir;
  e.bootstrap = 100;
  e.device = "cpu";
  auto m = cxr::evaluate::evaluate_run(e).to_json();
  EXPECT_DOUBLE_EQ(m["threshold"].get<double>(), t);
  // ... but not a rule on validation for a run that trained on it.
  e.balanced_threshold = true;
  expect_config_error([&] { cxr::evaluate::evaluate_run(e); },
                      "validation is not held out");
  e.run_dir = o.out_dir;
  m = cxr::evaluate::evaluate_run(e).to_json();
  EXPECT_NEAR(m["threshold"].get<double>(), t, 1e-6);
  EXPECT_NE(m["threshold_rule"].get<std::string>().find("balanced"),
            std::string::npos);
  e.target_sensitivity = 0.9;
  expect_config_error([&] { cxr::evaluate::evaluate_run(e); }, "only one of");
}

TEST(RunThreshold, BadChoicesAreRefusedBeforeTraining) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_run(dir.path(), "never");
  o.train.train_on = "train+val";
  o.balanced_threshold = true;
  expect_config_error([&] { cxr::train::train_run(o); }, "--threshold-from");
  o.balanced_threshold = false;
  o.target_sensitivity = 0.95;
  expect_config_error([&] { cxr::train::train_run(o); }, "--threshold-from");
  o.train.train_on = "train";
  o.balanced_threshold = true;
  expect_config_error([&] { cxr::train::train_run(o); }, "only one of");
  o.balanced_threshold = false;
  o.target_sensitivity = 1.5;
  expect_config_error([&] { cxr::train::train_run(o); },
                      "--target-sensitivity");
  // Unset is std::nullopt; a given 0 is no sensitivity to aim for.
  o.target_sensitivity = 0;
  expect_config_error([&] { cxr::train::train_run(o); },
                      "--target-sensitivity");
  o.target_sensitivity.reset();
  o.threshold_from = (dir / "nowhere").string();
  expect_config_error([&] { cxr::train::train_run(o); }, "no config.json");
  // Nothing was written for the refused runs.
  EXPECT_FALSE(fs::exists(dir / "never"));

  // A refit's threshold was not chosen on held-out data: not carried over.
  auto refit = tiny_run(dir.path(), "refit");
  refit.train.train_on = "train+val";
  refit.train.epochs = 1;
  cxr::train::train_run(refit);
  o.threshold_from = refit.out_dir;
  expect_config_error([&] { cxr::train::train_run(o); },
                      "trained on train+val");
  // Nor across architectures, nor from an unfinished run.
  auto j = cxr::read_json(fs::path(refit.out_dir) / "config.json");
  j["train"]["train_on"] = "train";
  j["model"]["arch"] = "resnet50v2";
  fs::create_directories(dir / "other");
  cxr::write_json_atomic(dir / "other" / "config.json", j);
  o.threshold_from = (dir / "other").string();
  expect_config_error([&] { cxr::train::train_run(o); }, "resnet50v2");
  j["status"] = "training";
  cxr::write_json_atomic(dir / "other" / "config.json", j);
  expect_config_error([&] { cxr::train::train_run(o); }, "not finished");
  EXPECT_FALSE(fs::exists(dir / "never"));
}

}  // namespace

namespace {

TEST(RunResult, TypedFieldsAreWhatConfigJsonRecords) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_run(dir.path(), "train");
  o.balanced_threshold = true;
  const auto r = cxr::train::train_run(o);
  const auto cfg = cxr::read_json(dir / "train" / "config.json");
  EXPECT_EQ(r.to_json(), cfg);
  EXPECT_EQ(r.run_dir, o.out_dir);
  EXPECT_EQ(r.arch, "baseline");
  EXPECT_EQ(r.best_epoch, cfg["result"]["best_epoch"].get<int>());
  EXPECT_EQ(r.epochs_run, cfg["result"]["epochs_run"].get<int>());
  EXPECT_EQ(r.frozen_epochs, 0);  // the baseline has no frozen phase
  EXPECT_DOUBLE_EQ(r.best_val_loss,
                   cfg["result"]["best_val_loss"].get<double>());
  ASSERT_TRUE(r.val.has_value());
  EXPECT_DOUBLE_EQ(r.val->auc, cfg["result"]["val"]["auc"].get<double>());
  EXPECT_DOUBLE_EQ(r.threshold, cfg["threshold"]["value"].get<double>());
  EXPECT_EQ(r.calibration.method, cfg["calibration"]["method"]);
  EXPECT_DOUBLE_EQ(r.ood_threshold, cfg["ood"]["threshold"].get<double>());

  const std::string s = cxr::train::format_summary(r);
  for (const std::string& line :
       {std::string("trained baseline in "), std::string("; val accuracy "),
        "\ndecision threshold " + cxr::shortest(r.threshold) + " (" +
            r.threshold_rule + ")\n",
        std::string("\ncalibration: "),
        std::string("\nout-of-distribution warning: score > "),
        "\nwrote " + o.out_dir + "/{config.json,"}) {
    EXPECT_NE(s.find(line), std::string::npos) << line << "\n" << s;
  }
}

}  // namespace
