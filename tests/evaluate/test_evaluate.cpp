// evaluate_run's typed result: what it returns, what it writes
// (metrics.json is its to_json()) and the summary the CLI prints.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.h"
#include "cxr/common/fs.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/train/run.h"

namespace fs = std::filesystem;
using cxr::testing::TempDir;

namespace {

cxr::evaluate::EvaluateResult hand_built() {
  cxr::evaluate::EvaluateResult r;
  r.split = "test";
  r.run = "runs/a";
  r.model = "baseline";
  r.positive = "COVID";
  r.negative = "Normal";
  r.metrics.confusion = {4, 1, 5, 2};  // tp, fp, tn, fn
  r.metrics.n = 12;
  r.metrics.threshold = 0.25;
  r.metrics.accuracy = {0.75, 0.5, 0.9};
  r.metrics.auc = {NAN, NAN, NAN};
  r.threshold_rule = "the run's";
  r.skipped = {{"a.png", "a.png: bad CRC", "test"},
               {"b.png", "b.png: truncated", "val"},
               {"loop", "loop: symlink loop", ""}};
  r.note = "the note";
  r.calibration.method = "temperature";
  r.calibration.temperature = 1.5;
  r.calibration.raw.ece = {0.1, 0.05, 0.2};
  r.ood.flagged = 3;
  r.ood.flag_rate = 0.25;
  return r;
}

}  // namespace

TEST(EvaluateResult, SummaryReadsTheTypedFields) {
  const std::string s = cxr::evaluate::format_summary(hand_built());
  EXPECT_EQ(s.rfind("baseline on test (n = 12, threshold 0.250: the run's)", 0),
            0u)
      << s;
  EXPECT_NE(s.find("  true Normal              5           1\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("  true COVID               2           4\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("accuracy    0.750  [95% CI 0.500, 0.900]"),
            std::string::npos)
      << s;
  // An undefined metric is n/a, never 0.
  EXPECT_NE(s.find("auc         n/a  [95% CI n/a, n/a]"), std::string::npos)
      << s;
  EXPECT_NE(s.find("calibration (temperature, T = 1.500)"), std::string::npos)
      << s;
  EXPECT_NE(s.find("out-of-distribution flags: 3 of 12 (25.0 %); no detector"),
            std::string::npos)
      << s;
  // Only one of the three skipped files was in the evaluated split.
  EXPECT_NE(s.find("skipped 3 unreadable images (--skip-bad; 1 of them in "
                   "test)"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("\nthe note\n"), std::string::npos) << s;
}

TEST(EvaluateResult, JsonKeepsTheMetricsJsonFields) {
  const auto j = hand_built().to_json();
  EXPECT_EQ(j["split"], "test");
  EXPECT_EQ(j["classes"]["positive"], "COVID");
  EXPECT_DOUBLE_EQ(j["threshold"].get<double>(), 0.25);
  EXPECT_EQ(j["confusion"]["fn"], 2);
  EXPECT_TRUE(j["auc"]["value"].is_null());
  EXPECT_EQ(j["skipped"][0]["split"], "test");
  // An entry that could not be listed has no split: null, not "".
  EXPECT_TRUE(j["skipped"][2]["split"].is_null());
  EXPECT_EQ(j["ood"]["flagged"], 3);
  EXPECT_DOUBLE_EQ(j["calibration"]["raw"]["ece"]["high"].get<double>(), 0.2);
}

TEST(EvaluateRun, WritesItsResultAndCountsSkippedImagesPerSplit) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = cxr::testing::tiny_run_options(dir.path(), "run");
  cxr::train::train_run(o);
  // One unreadable test image: with --skip-bad it is left out of n and
  // listed with its split.
  const fs::path bad = dir / "data" / "test" / "COVID" / "zz-broken.png";
  std::ofstream(bad) << "not a png";

  cxr::evaluate::EvalOptions e;
  e.run_dir = o.out_dir;
  e.bootstrap = 100;
  e.device = "cpu";
  e.skip_bad = true;
  const auto r = cxr::evaluate::evaluate_run(e);
  EXPECT_EQ(r.metrics.n, 12);
  ASSERT_EQ(r.skipped.size(), 1u);
  EXPECT_EQ(r.skipped[0].split, "test");
  EXPECT_NE(r.skipped[0].file.find("zz-broken.png"), std::string::npos);
  EXPECT_EQ(r.model, "baseline");

  const fs::path out = fs::path(o.out_dir) / "eval-test";
  const auto j = cxr::read_json(out / "metrics.json");
  EXPECT_EQ(j, nlohmann::json::parse(r.to_json().dump()));
  std::ifstream csv(out / "predictions.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 13);  // header + 12 images
  const auto s = cxr::evaluate::format_summary(r);
  EXPECT_EQ(s.rfind("baseline on test (n = 12, ", 0), 0u) << s;
  EXPECT_NE(s.find("skipped 1 unreadable images (--skip-bad; 1 of them in "
                   "test)"),
            std::string::npos)
      << s;
}
