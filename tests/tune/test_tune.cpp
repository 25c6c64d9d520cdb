// Search-space parsing, trial enumeration, determinism and resumability.
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/tune/tune.h"
#include "test_util.h"

namespace {

using cxr::testing::make_tiny_dataset;
using cxr::tune::parse_space;
namespace fs = std::filesystem;

void expect_config_error(const std::vector<std::string>& tokens,
                         const std::string& needle) {
  try {
    parse_space(tokens);
    FAIL() << "expected ConfigError for " << needle;
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << e.what();
  }
}

TEST(TuneSpace, TheStudysGridsAreExpressible) {
  auto baseline = parse_space({"filters=8,32,64", "dropout=0.4,0.3,0.2",
                               "lr=1e-3,1e-4,1e-5", "optimizer=adam,sgd"});
  auto trials = cxr::tune::grid_trials(baseline);
  EXPECT_EQ(trials.size(), 54u);
  EXPECT_EQ(trials.front().at("filters"), "8");
  EXPECT_EQ(trials.front().at("optimizer"), "adam");
  EXPECT_EQ(trials[1].at("optimizer"), "sgd");  // last token varies fastest
  auto transfer = parse_space(
      {"dropout=0.3,0.4,0.5", "lr=1e-2,1e-3,1e-4", "batch_size=32,64,128"});
  EXPECT_EQ(cxr::tune::grid_trials(transfer).size(), 27u);
  std::set<std::string> keys;
  for (const auto& t : trials) keys.insert(cxr::tune::trial_key(t));
  EXPECT_EQ(keys.size(), 54u);
}

TEST(TuneSpace, BadTokensAreNamed) {
  expect_config_error({"filters"}, "'filters'");
  expect_config_error({"lr=fast"}, "'lr=fast'");
  expect_config_error({"colour=red"}, "unknown parameter 'colour'");
  expect_config_error({"lr=1e-3", "lr=1e-4"}, "given twice");
  expect_config_error({"dropout=1.5"}, "dropout=1.5");
  expect_config_error({"optimizer=adagrad"}, "optimizer=adagrad");
  expect_config_error({"lr=1e-2..1e-5"}, "low < high");
  expect_config_error({"optimizer=a..b"}, "numeric");
  auto range = parse_space({"lr=1e-5..1e-2"});
  EXPECT_THROW(cxr::tune::grid_trials(range), cxr::ConfigError);
}

TEST(TuneSpace, RandomSearchIsSeededAndLogUniformForLr) {
  auto space = parse_space({"lr=1e-5..1e-1", "optimizer=adam,sgd"});
  auto a = cxr::tune::random_trials(space, 200, 3);
  auto b = cxr::tune::random_trials(space, 200, 3);
  auto c = cxr::tune::random_trials(space, 200, 4);
  ASSERT_EQ(a.size(), 200u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]);
  EXPECT_NE(a[0], c[0]);
  int below_1e3 = 0;
  for (const auto& t : a) {
    double lr = std::stod(t.at("lr"));
    EXPECT_GE(lr, 1e-5);
    EXPECT_LE(lr, 1e-1);
    below_1e3 += lr < 1e-3;
  }
  // Log-uniform: half the mass below the geometric middle (1e-3).
  EXPECT_GT(below_1e3, 70);
  EXPECT_LT(below_1e3, 130);
}

TEST(TuneSpace, ParamsApplyToRunOptions) {
  cxr::train::RunOptions o;
  cxr::tune::apply_params({{"filters", "8"},
                           {"dropout", "0.2"},
                           {"lr", "0.0001"},
                           {"optimizer", "sgd"},
                           {"batch_size", "64"}},
                          o);
  EXPECT_EQ(o.model.filters, (std::vector<int>{8, 16, 32, 32}));
  EXPECT_DOUBLE_EQ(o.model.dropout, 0.2);
  EXPECT_DOUBLE_EQ(o.train.lr, 1e-4);
  EXPECT_EQ(o.train.optimizer, "sgd");
  EXPECT_EQ(o.train.batch_size, 64);
  cxr::tune::apply_params({{"filters", "4-8"}}, o);
  EXPECT_EQ(o.model.filters, (std::vector<int>{4, 8}));
}

TEST(TuneSpace, ConfigFileKeepsOrder) {
  cxr::testing::TempDir dir;
  cxr::testing::write_bytes(
      dir / "s.json", R"({"lr": [0.001, 0.0001], "optimizer": ["adam"]})");
  auto s = cxr::tune::read_space_file((dir / "s.json").string());
  ASSERT_EQ(s.params.size(), 2u);
  EXPECT_EQ(s.params[0].name, "lr");
  EXPECT_EQ(s.params[0].values.size(), 2u);
}

/// Options for a search on make_tiny_dataset(dir / "data") into dir / "tune".
cxr::tune::TuneOptions tiny_search(const fs::path& dir) {
  cxr::tune::TuneOptions o;
  o.out_dir = (dir / "tune").string();
  o.progress = false;
  o.base.data.root = (dir / "data").string();
  o.base.data.size = 16;
  o.base.model.input_size = 16;
  o.base.model.filters = {4, 8};
  o.base.train.epochs = 2;
  o.base.train.batch_size = 6;
  o.base.device = "cpu";
  return o;
}

TEST(Tune, ResumesWithoutRedoingOrDuplicatingTrials) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.space = parse_space({"lr=1e-2,1e-3", "dropout=0.1,0.2"});
  auto first = cxr::tune::run_tune(o);
  EXPECT_EQ(first.trials, 4);
  EXPECT_EQ(first.trials_run_now, 4);
  // Simulate an interruption during the last trial: its line is torn.
  const auto store = dir / "tune" / "trials.jsonl";
  std::string text = cxr::read_text(store);
  text = text.substr(0, text.size() - 30);
  cxr::testing::write_bytes(store, text);
  auto second = cxr::tune::run_tune(o);
  EXPECT_EQ(second.trials, 4);
  EXPECT_EQ(second.trials_run_now, 1);
  std::string csv = cxr::read_text(dir / "tune" / "trials.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);  // header + 4
  EXPECT_TRUE(fs::exists(dir / "tune" / "results.md"));
  // A third run does nothing new.
  auto third = cxr::tune::run_tune(o);
  EXPECT_EQ(third.trials_run_now, 0);
  EXPECT_EQ(third.best.key, second.best.key);
}

TEST(Tune, SequentialModeAndRefit) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.mode = "sequential";
  o.space = parse_space({"lr=1e-2,1e-3", "dropout=0.1,0.2"});
  o.refit = true;
  auto best = cxr::tune::run_tune(o);
  // lr values (2), then dropout values with the best lr (one is a repeat).
  EXPECT_EQ(best.trials, 3);
  ASSERT_TRUE(best.refit.has_value());
  EXPECT_TRUE(fs::exists(dir / "tune" / "refit" / "model.safetensors"));
  EXPECT_TRUE(
      fs::exists(dir / "tune" / "refit" / "eval-test" / "metrics.json"));
}

TEST(Tune, RefitCarriesTheThresholdTheBestTrialChoseOnValidation) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.space = parse_space({"lr=1e-2,1e-3"});
  o.base.balanced_threshold = true;
  o.refit = true;
  auto best = cxr::tune::run_tune(o);
  const auto trial =
      cxr::read_json(fs::path(best.best.run_dir) / "config.json");
  const auto refit = cxr::read_json(dir / "tune" / "refit" / "config.json");
  EXPECT_EQ(refit["threshold"]["value"], trial["threshold"]["value"]);
  EXPECT_NE(refit["threshold"]["rule"].get<std::string>().find("balanced"),
            std::string::npos);
}

TEST(Tune, MomentumWithoutSgdIsRefusedBeforeDataIsRead) {
  cxr::tune::TuneOptions o;
  o.base.data.root = "/nonexistent/data";  // the space is checked first
  o.base.train.optimizer = "adam";
  o.space = parse_space({"momentum=0.5,0.9", "lr=1e-3"});
  const auto why =
      cxr::testing::error_of<cxr::ConfigError>([&] { cxr::tune::run_tune(o); });
  EXPECT_NE(why.find("'momentum' applies to optimizer sgd only"),
            std::string::npos)
      << why;
  o.space = parse_space({"optimizer=adam,rmsprop", "momentum=0.9"});
  o.base.train.optimizer = "sgd";  // the space's optimizers decide
  EXPECT_NE(cxr::testing::error_of<cxr::ConfigError>([&] {
              cxr::tune::run_tune(o);
            }).find("adam, rmsprop"),
            std::string::npos);
}

TEST(TuneSpace, MomentumIsDroppedFromTrialsThatDoNotUseSgd) {
  using cxr::tune::without_unused_params;
  const cxr::tune::Params adam = {{"optimizer", "adam"}, {"momentum", "0.5"}};
  EXPECT_EQ(without_unused_params(adam, "sgd").count("momentum"), 0u);
  const cxr::tune::Params sgd = {{"optimizer", "sgd"}, {"momentum", "0.5"}};
  EXPECT_EQ(without_unused_params(sgd, "adam"), sgd);
  // No optimizer in the trial: the base one decides.
  const cxr::tune::Params m = {{"momentum", "0.5"}};
  EXPECT_EQ(without_unused_params(m, "sgd"), m);
  EXPECT_TRUE(without_unused_params(m, "rmsprop").empty());
}

TEST(Tune, AdamTrialsDifferingOnlyInMomentumRunOnce) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.base.train.epochs = 1;
  o.space = parse_space({"optimizer=adam,sgd", "momentum=0.5,0.9"});
  auto best = cxr::tune::run_tune(o);
  // sgd x 2 momentum values, adam once.
  EXPECT_EQ(best.trials, 3);
  EXPECT_EQ(best.trials_run_now, 3);
  const std::string csv = cxr::read_text(dir / "tune" / "trials.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4) << csv;
  // The adam row leaves momentum empty: it did not use one.
  EXPECT_NE(csv.find(",,adam,"), std::string::npos) << csv;
  EXPECT_EQ(csv.find("0.5,adam"), std::string::npos) << csv;
}

TEST(Tune, ABudgetSpentBeforeTheFirstTrialIsRefused) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.space = parse_space({"lr=1e-2,1e-3,1e-4"});
  o.base.train.epochs = 1;
  o.budget_minutes = 1e-12;  // gone before the first trial can start
  const auto why =
      cxr::testing::error_of<cxr::ConfigError>([&] { cxr::tune::run_tune(o); });
  EXPECT_NE(why.find("no trial could start"), std::string::npos) << why;
}

TEST(Tune, ABudgetStopsNewTrialsMidSearch) {
  cxr::testing::TempDir dir;
  make_tiny_dataset(dir / "data");
  auto o = tiny_search(dir.path());
  o.base.train.epochs = 1;
  // A search of one trial, stored ...
  o.space = parse_space({"lr=1e-2"});
  ASSERT_EQ(cxr::tune::run_tune(o).trials_run_now, 1);
  // ... then a search of three whose first is that stored trial (reused,
  // no training) and whose budget is spent by the time the second would
  // start: the search stops there, with the one trial it has. Ignoring the
  // budget would train the other two.
  o.space = parse_space({"lr=1e-2,1e-3,1e-4"});
  o.budget_minutes = 1e-12;
  const auto r = cxr::tune::run_tune(o);
  EXPECT_EQ(r.trials, 1);
  EXPECT_EQ(r.trials_run_now, 0);
  EXPECT_TRUE(r.budget_exhausted);
  EXPECT_EQ(r.best.params.at("lr"), "1e-2");
  const std::string csv = cxr::read_text(dir / "tune" / "trials.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 2) << csv;
  EXPECT_FALSE(fs::exists(dir / "tune" / "trials" / "trial-001"));
  const auto best = cxr::read_json(dir / "tune" / "best.json");
  EXPECT_EQ(best, r.to_json());
  EXPECT_EQ(best["budget_exhausted"], true);
}

TEST(Tune, AGivenBudgetMustBePositiveAndUnsetMeansNoLimit) {
  cxr::tune::TuneOptions o;
  o.base.data.root = "/nonexistent/data";  // the options are checked first
  o.space = parse_space({"lr=1e-3"});
  EXPECT_FALSE(o.budget_minutes.has_value());  // the default: no limit
  for (double bad : {0.0, -2.0, std::nan("")}) {
    o.budget_minutes = bad;
    const auto why = cxr::testing::error_of<cxr::ConfigError>(
        [&] { cxr::tune::run_tune(o); });
    EXPECT_NE(why.find("--budget-minutes"), std::string::npos) << why;
    EXPECT_NE(why.find("leave it out for no limit"), std::string::npos) << why;
  }
  // best.json keeps its format: 0 when there was no limit.
  cxr::tune::TuneResult r;
  EXPECT_EQ(r.to_json()["budget_minutes"], 0.0);
  r.budget_minutes = 2.5;
  EXPECT_EQ(r.to_json()["budget_minutes"], 2.5);
}

TEST(Tune, TheSummaryNamesTheBestTrialAndTheRefit) {
  cxr::tune::TuneResult r;
  r.metric = "val_auc";
  r.trials = 4;
  r.best.key = "lr=1e-3";
  r.best.val_loss = 0.5;
  r.best.val_accuracy = 0.75;
  r.best.val_auc = NAN;  // written as best.json writes it: null
  r.best.best_epoch = 3;
  r.out_dir = "t";
  std::string s = cxr::tune::format_summary(r);
  EXPECT_NE(s.find("best of 4 trials by val_auc: lr=1e-3  (val loss 0.5, acc "
                   "0.75, AUC null, best epoch 3)\n"),
            std::string::npos)
      << s;
  EXPECT_EQ(s.find("refit"), std::string::npos) << s;
  r.refit = cxr::tune::RefitResult{"t/refit",   3,           {0.8, 0.7, 0.9},
                                   {0.6, 0, 1}, {0.9, 0, 1}, {0.85, 0, 1}};
  s = cxr::tune::format_summary(r);
  EXPECT_NE(s.find("refit t/refit: test accuracy 0.8 [0.7, 0.9], recall 0.6, "
                   "AUC 0.85\n"),
            std::string::npos)
      << s;
  EXPECT_EQ(r.to_json()["refit"]["test"]["auc"]["value"], 0.85);
}

TEST(Tune, TheDefaultSpaceParses) {
  for (const char* arch : {"baseline", "mobilenetv2", "resnet50v2"}) {
    const auto space = parse_space(cxr::tune::default_space(arch));
    EXPECT_EQ(cxr::tune::grid_trials(space).size(), 4u) << arch;
  }
}

}  // namespace
