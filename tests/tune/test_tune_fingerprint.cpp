// The trial store reuses a trial only when every setting that shaped it
// matches (a changed --epochs or --size makes other trials), and the refit
// rule shared by `cxr tune --refit` and `cxr study`: the trial's schedule,
// unchanged, stopped after its best epoch.
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/train/run.h"
#include "cxr/train/trainer.h"
#include "cxr/tune/tune.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;
namespace fs = std::filesystem;

cxr::tune::TuneOptions tiny_tune(const fs::path& dir) {
  cxr::tune::TuneOptions t;
  t.space = cxr::tune::parse_space({"lr=1e-2"});
  t.out_dir = (dir / "tune").string();
  t.progress = false;
  // The tiny run's recipe, one epoch a trial (tune gives every trial its own
  // run folder and progress setting).
  t.base = cxr::testing::tiny_run_options(dir, "unused");
  t.base.train.epochs = 1;
  return t;
}

std::string config_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const cxr::ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TuneFingerprint, ChangedSettingsAreRefusedNotMixed) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto t = tiny_tune(dir.path());
  EXPECT_EQ(cxr::tune::run_tune(t).trials_run_now, 1);
  // Same settings: the stored trial is reused.
  EXPECT_EQ(cxr::tune::run_tune(t).trials_run_now, 0);

  auto epochs = t;
  epochs.base.train.epochs = 2;
  auto e = config_error([&] { cxr::tune::run_tune(epochs); });
  EXPECT_NE(e.find("'" + t.out_dir +
                   "' was tuned with --epochs 1 (this search: 2); use "
                   "another --out or --overwrite"),
            std::string::npos)
      << e;
  auto size = t;
  size.base.data.size = 24;
  size.base.model.input_size = 24;
  e = config_error([&] { cxr::tune::run_tune(size); });
  EXPECT_NE(e.find("was tuned with --size 16 (this search: 24)"),
            std::string::npos)
      << e;
  auto filters = t;
  filters.base.model.filters = {4, 16};
  e = config_error([&] { cxr::tune::run_tune(filters); });
  EXPECT_NE(e.find("was tuned with --filters 4,8 (this search: 4,16)"),
            std::string::npos)
      << e;

  // --overwrite starts afresh with the new settings.
  epochs.overwrite = true;
  EXPECT_EQ(cxr::tune::run_tune(epochs).trials_run_now, 1);
  epochs.overwrite = false;
  EXPECT_EQ(cxr::tune::run_tune(epochs).trials_run_now, 0);

  // A store written before trials recorded their settings is not trusted.
  const fs::path store = fs::path(t.out_dir) / "trials.jsonl";
  auto line = nlohmann::json::parse(cxr::read_text(store));
  line.erase("settings");
  cxr::write_text_atomic(store, line.dump() + "\n");
  e = config_error([&] { cxr::tune::run_tune(epochs); });
  EXPECT_NE(e.find("older cxr"), std::string::npos) << e;
}

TEST(TuneFingerprint, AFailedSearchLeavesNoNewFolder) {
  TempDir dir;
  auto t = tiny_tune(dir.path());  // no data there
  EXPECT_THROW(cxr::tune::run_tune(t), cxr::DataError);
  EXPECT_FALSE(fs::exists(t.out_dir));
}

TEST(TuneRefitRule, TheTrialsScheduleStoppedAtItsBestEpoch) {
  cxr::train::RunOptions base;
  base.model.arch = "baseline";
  base.train.epochs = 10;
  base.train.schedule = "cosine";
  cxr::tune::TrialResult best;
  best.params = {{"lr", "0.01"}};
  best.best_epoch = 4;
  best.run_dir = "tune/trials/trial-000";
  auto ro = cxr::tune::refit_options(base, best);
  EXPECT_EQ(ro.train.epochs, 10);  // the cosine keeps its length
  EXPECT_EQ(ro.stop_after_epoch, 4);
  EXPECT_EQ(ro.train.train_on, "train+val");
  EXPECT_EQ(ro.train.patience, 0);
  EXPECT_DOUBLE_EQ(ro.train.lr, 0.01);
  EXPECT_EQ(ro.threshold_from, best.run_dir);
  best.best_epoch = 10;  // the last epoch: the whole schedule
  EXPECT_EQ(cxr::tune::refit_options(base, best).stop_after_epoch, 0);

  // Transfer: phases kept, stop inside phase 2.
  base.model.arch = "mobilenetv2";
  base.train.epochs = 3;
  base.train.fine_tune_epochs = 5;
  best.best_epoch = 6;
  best.frozen_epochs = 3;
  ro = cxr::tune::refit_options(base, best);
  EXPECT_EQ(ro.train.epochs, 3);
  EXPECT_EQ(ro.train.fine_tune_epochs, 5);
  EXPECT_EQ(ro.stop_after_epoch, 6);
}

TEST(TuneRefitRule, StoppingFollowsTheScheduleInsteadOfShorteningIt) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_tune(dir.path()).base;
  o.train.progress = false;
  o.train.train_on = "train+val";
  o.train.schedule = "cosine";
  o.train.epochs = 4;
  o.out_dir = (dir / "full").string();
  cxr::train::train_run(o);
  o.stop_after_epoch = 2;
  o.out_dir = (dir / "stopped").string();
  auto cfg = cxr::train::train_run(o).to_json();
  EXPECT_EQ(cfg["result"]["epochs_run"], 2);
  EXPECT_EQ(cfg["result"]["stopped_after_epoch"], 2);
  const auto full =
      cxr::train::read_history_csv((dir / "full" / "history.csv").string());
  const auto stopped =
      cxr::train::read_history_csv((dir / "stopped" / "history.csv").string());
  ASSERT_EQ(stopped.size(), 2u);
  // The same learning rate each epoch as the whole schedule, and the same
  // weights trajectory (same seed): the refit is the trial's model.
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_DOUBLE_EQ(stopped[i].lr, full[i].lr) << i;
    EXPECT_NEAR(stopped[i].train_loss, full[i].train_loss, 1e-5) << i;
  }
  EXPECT_GT(stopped[1].lr, full[3].lr);  // not annealed to the end

  // With validation the kept epoch is chosen on it: refused.
  o.train.train_on = "train";
  o.out_dir = (dir / "refused").string();
  EXPECT_THROW(cxr::train::train_run(o), cxr::ConfigError);
}

}  // namespace
