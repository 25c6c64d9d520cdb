// `cxr study --quick` on cxr-seed: the report exists, has every section,
// its numbers match the metrics files, a re-run resumes, and Chromium
// renders the page (label: data).
#include <iomanip>

#include "cxr/common/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

std::string fixed3(double v) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(3) << v;
  return s.str();
}

TEST(StudySeed, QuickStudyWritesACompleteReportAndResumes) {
  const std::string root = cxr::testing::shared_dir() + "/data/cxr-seed";
  const std::string weights = cxr::testing::shared_dir() +
                              "/weights/mobilenet_v2_1.0_224_imagenet_notop.h5";
  if (!fs::is_directory(root) || !fs::exists(weights)) {
    GTEST_SKIP() << "../shared/data/cxr-seed or the MobileNetV2 weights are "
                    "absent; the study test needs both";
  }
  cxr::testing::TempDir dir;
  const auto out = dir / "study";
  const std::string cmd = std::string(CXR_BINARY) + " study --quick --data " +
                          root + " --weights " + weights + " --out " +
                          out.string() + " --cache-dir " +
                          (dir / "cache").string();
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(cmd, &log), 0) << log;
  const std::string html = cxr::read_text(out / "report.html");
  for (const char* id : {"results", "data", "leakage", "augmentation", "tuning",
                         "training", "confusion", "roc", "gradcam", "config"}) {
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos)
        << "section " << id;
  }
  EXPECT_NE(html.find("reference study: baseline CNN"), std::string::npos);
  EXPECT_NE(html.find("every misclassified test image"), std::string::npos);
  EXPECT_NE(html.find("Trust checks"), std::string::npos);
  // Calibration and the OOD warning, with each model's OOD table and card.
  EXPECT_NE(html.find("id=\"calibration\""), std::string::npos);
  EXPECT_NE(html.find("id=\"ood\""), std::string::npos);
  EXPECT_NE(html.find("rotated-90"), std::string::npos);
  EXPECT_NE(html.find("Model card:"), std::string::npos);
  EXPECT_EQ(html.find("not found)"), std::string::npos) << "missing picture";
  for (const char* run : {"baseline", "mobilenetv2", "mobilenetv2-refit"}) {
    auto m = cxr::read_json(out / run / "eval-test" / "metrics.json");
    EXPECT_TRUE(fs::exists(out / run / "eval-ood" / "ood.json")) << run;
    EXPECT_TRUE(fs::exists(out / run / "model-card.md")) << run;
    for (const char* k : {"accuracy", "recall", "specificity", "auc"}) {
      const std::string v = "<b>" + fixed3(m[k]["value"]) + "</b>";
      EXPECT_NE(html.find(v), std::string::npos) << run << " " << k << " " << v;
    }
  }
  auto sj = cxr::read_json(out / "study.json");
  for (const char* step :
       {"explore", "tune-baseline", "baseline-refit", "transfer",
        "transfer-refit", "evaluate", "ood-sets", "explain", "report"}) {
    EXPECT_TRUE(sj["steps"][step]["done"].get<bool>()) << step;
  }
  // A second run redoes nothing.
  ASSERT_EQ(cxr::testing::run_command(cmd, &log), 0) << log;
  int skipped = 0;
  for (size_t p = log.find("done earlier, skipped"); p != std::string::npos;
       p = log.find("done earlier, skipped", p + 1)) {
    ++skipped;
  }
  EXPECT_EQ(skipped, 9) << log;

  if (cxr::testing::run_command("command -v chromium") != 0) {
    GTEST_SKIP() << "chromium is not installed; skipping the browser render";
  }
  const std::string script =
      std::string(CXR_SOURCE_DIR) + "/scripts/render-report.sh";
  ASSERT_EQ(cxr::testing::run_command(
                "bash " + script + " " + (out / "report.html").string() + " " +
                    (dir / "report.png").string() + " 3000",
                &log),
            0)
      << log;
  EXPECT_GT(fs::file_size(dir / "report.png"), 50000u);
}

}  // namespace
