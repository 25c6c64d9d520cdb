// The report from files alone: a study folder written by hand (study.json,
// two run folders with config.json, one with eval-test/metrics.json), no
// training and no images. Set CXR_TEST_REPORT_DIR to keep the HTML.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/report/report.h"
#include "report_test_util.h"
#include "test_util.h"

namespace cxr::report {
namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;
using nlohmann::json;

constexpr char kHostile[] = "<script>alert(1)</script>";

json ci(double value, double low, double high) {
  return {{"value", value}, {"low", low}, {"high", high}};
}

json config(const std::string& arch) {
  return {{"model", {{"arch", arch}}},
          {"train", {{"train_on", "train"}}},
          {"result",
           {{"epochs_run", 3},
            {"best_epoch", 2},
            {"seconds", 12.0},
            {"images_per_second", 40.5},
            {"device", "cpu"},
            {"parameters", 1234}}}};
}

json metrics() {
  return {{"n", 8},
          {"accuracy", ci(0.875, 0.5294, 0.9776)},
          {"precision", ci(0.8, 0.4, 1.0)},
          {"recall", ci(1.0, 0.6, 1.0)},
          {"specificity", ci(0.75, 0.3, 0.95)},
          {"f1", ci(0.889, 0.5, 1.0)},
          {"auc", ci(0.9375, 0.7, 1.0)},
          {"threshold", 0.5},
          {"threshold_rule", "fixed 0.5"},
          {"roc", {{"fpr", {0.0, 0.25, 1.0}}, {"tpr", {0.0, 1.0, 1.0}}}}};
}

// <root>/study: "baseline" evaluated on the test split, and a run with a
// hostile name that has nothing but config.json.
fs::path write_study(const fs::path& root) {
  const fs::path study = root / "study";
  write_json(study / "study.json",
             {{"data", "data/cxr-seed"},
              {"finished", "2026-01-01 12:00"},
              {"minutes", 1.25},
              {"device", "cpu"},
              {"models",
               {{{"name", "baseline"}, {"run", "runs/baseline"}},
                {{"name", kHostile}, {"run", "runs/hostile"}}}}});
  write_json(study / "runs/baseline/config.json", config("baseline"));
  write_json(study / "runs/baseline/eval-test/metrics.json", metrics());
  write_json(study / "runs/hostile/config.json", config("mobilenetv2"));
  return study;
}

// Writes write_study's study under `tmp` and its report (options `o`, to
// tmp/report.html); returns the HTML.
std::string study_report(const TempDir& tmp, ReportOptions& o) {
  o.inputs = {write_study(tmp.path()).string()};
  o.out_path = (tmp / "report.html").string();
  write_report(o);
  return read_text(o.out_path);
}

TEST(Report, StudyFromFilesAlone) {
  TempDir tmp;
  ReportOptions o;
  o.inputs = {write_study(report_out_dir(tmp)).string()};
  o.out_path = (report_out_dir(tmp) / "report.html").string();
  const ReportSummary summary = write_report(o);
  const std::string html = read_text(o.out_path);

  EXPECT_EQ(summary.path, o.out_path);
  EXPECT_TRUE(contains(html, "<h3>baseline</h3>"));
  EXPECT_TRUE(contains(html,
                       "<p>baseline, trained on train, 3 epochs (weights of "
                       "epoch 2), 12 s at 40.5 images/s on cpu, 1234 "
                       "parameters.</p>"));
  // A metric with its CI, three decimals.
  EXPECT_TRUE(contains(html,
                       "<td>baseline</td><td>8</td><td><b>0.875</b> <span "
                       "class=\"ci\">[0.529, 0.978]</span></td>"));
  EXPECT_TRUE(contains(html, "data:image/svg+xml;base64,"));  // the ROC chart
  // The hostile name is text, never markup.
  EXPECT_FALSE(contains(html, kHostile));
  EXPECT_TRUE(contains(html, "<h3>&lt;script&gt;alert(1)&lt;/script&gt;</h3>"));

  ASSERT_EQ(summary.models.size(), 1u);  // only the evaluated run
  EXPECT_EQ(summary.models[0].name, "baseline");
  EXPECT_DOUBLE_EQ(summary.models[0].accuracy, 0.875);
  EXPECT_DOUBLE_EQ(summary.models[0].auc, 0.9375);
  const std::vector<std::string>& ids = summary.sections;
  for (const char* id : {"results", "training", "roc", "calibration", "ood"}) {
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
  }
}

TEST(Report, MissingOptionalFilesGiveTheirFallbacks) {
  TempDir tmp;
  ReportOptions o;
  const std::string html = study_report(tmp, o);
  // No eval-test/metrics.json: a row that says so.
  EXPECT_TRUE(contains(html,
                       "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td "
                       "colspan=8 class=missing>not evaluated on test</td>"));
  // No curves.png, confusion.png, ood.json: named as missing.
  EXPECT_TRUE(
      contains(html, "<p class=\"missing\">(curves.png not found)</p>"));
  EXPECT_TRUE(
      contains(html, "<p class=\"missing\">(confusion.png not found)</p>"));
  EXPECT_TRUE(contains(html, "not scored on the OOD sets"));
  // No explain folders: the gallery says none was produced.
  EXPECT_TRUE(contains(html, "No misclassification gallery was produced."));
  // A split nobody was evaluated on: every run falls back.
  o.split = "val";
  write_report(o);
  EXPECT_TRUE(contains(read_text(o.out_path),
                       "<td>baseline</td><td colspan=8 class=missing>not "
                       "evaluated on val</td>"));
}

// Page::section with an introduction: the paragraph follows the heading at
// once and is closed before what the section writes next.
TEST(Report, SectionsOpenWithTheirIntroduction) {
  TempDir tmp;
  ReportOptions o;
  const std::string html = study_report(tmp, o);
  EXPECT_TRUE(contains(html,
                       "<h2 id=\"calibration\">Calibration: do the "
                       "probabilities mean what they say?</h2>\n<p>"
                       "Temperature scaling (Guo et al. 2017)"));
  EXPECT_TRUE(contains(html,
                       "can sit above the point estimate).</p>\n<table><tr>"
                       "<th>model</th><th>T (fitted on)</th>"));
  EXPECT_TRUE(contains(html,
                       "<h2 id=\"ood\">Out-of-distribution warning</h2>\n"
                       "<p>Before the model, cheap input checks"));
  EXPECT_TRUE(contains(html,
                       "the detector's score against the test split.</p>\n"
                       "<h3>baseline</h3>"));
  EXPECT_TRUE(contains(html,
                       "<h2 id=\"trust\">Trust checks of the Grad-CAM "
                       "maps</h2>\n<p>Three checks of whether the maps can "
                       "be trusted"));
  EXPECT_TRUE(contains(html,
                       "sit, against a uniform map.</p>\n<p class=missing>No "
                       "trust checks were found"));
}

TEST(Report, RunFoldersAndBadInputs) {
  TempDir tmp;
  const fs::path study = write_study(tmp.path());
  ReportOptions o;
  o.inputs = {(study / "runs/baseline").string()};
  o.out_path = (tmp / "runs.html").string();
  const ReportSummary summary = write_report(o);
  ASSERT_EQ(summary.models.size(), 1u);
  EXPECT_EQ(summary.models[0].name, "baseline");  // the folder name
  EXPECT_FALSE(contains(read_text(o.out_path), "study.json"));

  o.inputs = {(tmp / "nothing").string()};
  EXPECT_THROW(write_report(o), DataError);
  o.inputs.clear();
  EXPECT_THROW(write_report(o), ConfigError);
}

}  // namespace
}  // namespace cxr::report
