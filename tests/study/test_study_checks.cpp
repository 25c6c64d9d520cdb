// cxr study checks what it can before the first step: the MobileNetV2
// weights (a missing default is refused, not silently random init; a bad
// file is found now, not at the transfer step), and a resumed study folder
// must have been made with every same setting.
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/precision.h"
#include "cxr/models/keras_h5.h"
#include "cxr/study/study.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;
namespace fs = std::filesystem;

using cxr::testing::error_of;

// A tiny data set that lists fine but fails to load (one broken PNG), so
// that run_study stops right after its checks and its study.json.
cxr::study::StudyOptions tiny_study(const fs::path& dir) {
  cxr::testing::make_tiny_dataset(dir / "data");
  cxr::testing::write_bytes(dir / "data" / "train" / "COVID" / "broken.png",
                            "not a png");
  cxr::study::StudyOptions s;
  s.out_dir = (dir / "study").string();
  s.data.root = (dir / "data").string();
  s.quick = true;
  s.progress = false;
  s.device = "cpu";
  return s;
}

TEST(StudyChecks, WeightsAreCheckedBeforeTheFirstStep) {
  TempDir dir;
  auto s = tiny_study(dir.path());
  auto e = error_of<cxr::ConfigError>([&] { cxr::study::run_study(s); });
  EXPECT_NE(e.find("no MobileNetV2 ImageNet weights"), std::string::npos) << e;
  EXPECT_NE(e.find("--no-weights"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(fs::path(s.out_dir) / "study.json"));

  s.weights = (dir / "weights.h5").string();
  cxr::write_text_atomic(s.weights, "not hdf5");
  e = error_of<cxr::ModelError>([&] { cxr::study::run_study(s); });
  EXPECT_NE(e.find(s.weights), std::string::npos) << e;

  // HDF5 in the Keras layout, but not MobileNetV2's layers.
  cxr::models::write_keras_h5(
      s.weights, {{"dense", {{"dense/kernel:0", torch::zeros({2, 2})}}}});
  e = error_of<cxr::ModelError>([&] { cxr::study::run_study(s); });
  EXPECT_NE(e.find("has no layer 'Conv1'"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(fs::path(s.out_dir) / "study.json"));

  s.random_init = true;
  e = error_of<cxr::ConfigError>([&] { cxr::study::run_study(s); });
  EXPECT_NE(e.find("contradict"), std::string::npos) << e;
}

TEST(StudyChecks, AMissingDataFolderIsNamedBeforeTheWeights) {
  TempDir dir;
  auto s = tiny_study(dir.path());
  s.data.root = (dir / "missing").string();
  EXPECT_THROW(cxr::study::run_study(s), cxr::DataError);
  EXPECT_FALSE(fs::exists(fs::path(s.out_dir) / "study.json"));
}

TEST(StudyChecks, EverySettingIsPartOfTheResumeFingerprint) {
  TempDir dir;
  auto s = tiny_study(dir.path());
  s.random_init = true;
  // The study records its options, then fails to load the broken PNG.
  EXPECT_ANY_THROW(cxr::study::run_study(s));
  ASSERT_TRUE(fs::exists(fs::path(s.out_dir) / "study.json"));
  EXPECT_THROW(cxr::study::run_study(s), cxr::DataError);  // same options

  for (int k = 0; k < 5; ++k) {
    auto t = s;
    if (k == 0) t.data.size = 96;
    if (k == 1) t.data.seed = 7;
    if (k == 2) t.data.val_fraction = 0.2;
    if (k == 3) t.data.positive = "Normal";
    // --precision is process-wide: a bf16 resume of an fp32 study.
    if (k == 4) cxr::set_precision(cxr::Precision::kBFloat16);
    const auto e =
        error_of<cxr::ConfigError>([&] { cxr::study::run_study(t); });
    cxr::set_precision(cxr::Precision::kFloat32);
    EXPECT_NE(e.find("holds a study made with other options"),
              std::string::npos)
        << k << ": " << e;
  }
}

TEST(StudyChecks, TheRecipeFineTunesMobileNetV2FromBlock6On) {
  // Recipe version 4 (docs/study.md): the 112, 56 and 28 px stages keep
  // their ImageNet weights in every plan, so --quick runs the same code.
  cxr::study::StudyOptions o;
  EXPECT_EQ(cxr::study::make_plan(o).unfreeze_from, "block_6_expand");
  EXPECT_EQ(cxr::study::make_plan(o).fine_tune_epochs, 20);
  o.quick = true;
  EXPECT_EQ(cxr::study::make_plan(o).unfreeze_from, "block_6_expand");
}

}  // namespace
