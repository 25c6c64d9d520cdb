// The out-of-distribution warning on real data (label: data): a short
// baseline trained on cxr-seed flags at most 5 % of its test split and most
// of each obvious OOD set (photos, rotated and inverted films, noise, text
// pages). Cropped and blurred films and the 4-image DICOM sets (the
// abdominal radiograph, CT/MR files) are measured and printed, not
// asserted: the short model's detector does not reach 90 % on them (see
// docs/trust.md for the study's models).
#include <cstdio>

#include "cxr/common/fs.h"
#include "cxr/evaluate/ood_sets.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

TEST(OodSeed, ShortBaselineFlagsOodSetsNotTheTestSplit) {
  const std::string shared = cxr::testing::shared_dir();
  const std::string root = shared + "/data/cxr-seed";
  if (!fs::is_directory(root)) {
    GTEST_SKIP() << "../shared/data/cxr-seed is absent; the real-data OOD "
                    "test needs it";
  }
  cxr::testing::TempDir dir;
  const std::string bin = CXR_BINARY;
  const auto run = (dir / "run").string();
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(
                bin + " train " + root + " --out " + run +
                    " --size 64 --filters 16,32,64 --epochs 3 --quiet "
                    "--cache-dir " +
                    (dir / "cache").string(),
                &log),
            0)
      << log;
  const auto cfg = cxr::read_json(fs::path(run) / "config.json");
  EXPECT_EQ(cfg["calibration"]["method"], "temperature");
  EXPECT_EQ(cfg["ood"]["version"], 1);

  cxr::evaluate::OodEvalOptions o;
  o.run_dir = run;
  o.shared_dir = shared;
  o.device = "cpu";
  const auto j = cxr::evaluate::evaluate_ood(o);
  std::printf("%s", cxr::evaluate::format_ood(j).c_str());
  EXPECT_EQ(j["test"]["n"], 200);
  // The threshold keeps the 95 % upper bound of the false-flag rate on the
  // 400 validation images at 5 % (about 2.75 % flagged there).
  EXPECT_LE(j["test"]["flag_rate"].get<double>(), 0.05);
  for (const auto& s : j["sets"]) {
    const std::string name = s["name"];
    const double rate = s["flag_rate"];
    // Measured above, not asserted: cropped and blurred films (harder
    // shifts), and the DICOM sets of 4 images each (other body parts: this
    // 3-epoch model catches 0-2 of the abdominal radiograph's 4 variants and
    // 3-4 of the CT/MR/RGB/10-px files).
    if (name == "cropped" || name == "blurred" || name == "abdomen-dicom" ||
        name == "other-dicom") {
      continue;
    }
    EXPECT_GE(rate, 0.90) << name;
    if (s["auroc"].is_number()) {
      EXPECT_GE(s["auroc"].get<double>(), 0.80) << name;
    }
  }
}

}  // namespace
