// A short real training on cxr-seed beats chance clearly, and the trained
// run evaluates and predicts through the CLI (label: data).
#include "cxr/common/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

TEST(TrainSeed, ShortTrainingBeatsChanceAndEvaluates) {
  const std::string root = cxr::testing::shared_dir() + "/data/cxr-seed";
  if (!fs::is_directory(root)) {
    GTEST_SKIP() << "../shared/data/cxr-seed is absent; the real-data test "
                    "needs it";
  }
  cxr::testing::TempDir dir;
  const std::string bin = CXR_BINARY;
  const auto run = (dir / "run").string();
  const std::string cache = " --cache-dir " + (dir / "cache").string();
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(
                bin + " train " + root + " --out " + run +
                    " --size 64 --filters 16,32,64 --epochs 3 --quiet" + cache,
                &log),
            0)
      << log;
  auto cfg = cxr::read_json(fs::path(run) / "config.json");
  // Chance is 0.5 and its standard deviation on 400 balanced val images is
  // 0.025: 0.65 is six of them above chance. (Measured: 0.735, AUC 0.81.)
  EXPECT_GT(cfg["result"]["val"]["accuracy"].get<double>(), 0.65) << log;
  EXPECT_GT(cfg["result"]["val"]["auc"].get<double>(), 0.75) << log;
  EXPECT_TRUE(fs::exists(fs::path(run) / "curves.png"));
  EXPECT_FALSE(fs::exists(fs::path(run) / "state.pt"));

  ASSERT_EQ(
      cxr::testing::run_command(
          bin + " evaluate " + run + " --split test --bootstrap 200", &log),
      0)
      << log;
  auto m = cxr::read_json(fs::path(run) / "eval-test" / "metrics.json");
  EXPECT_EQ(m["n"], 200);
  EXPECT_GT(m["accuracy"]["value"].get<double>(), 0.65);
  EXPECT_LE(m["accuracy"]["low"].get<double>(),
            m["accuracy"]["value"].get<double>());

  const std::string img = root + "/test/COVID";
  ASSERT_EQ(cxr::testing::run_command(bin + " predict " + run + " " + img +
                                          " --csv " + (dir / "p.csv").string(),
                                      &log),
            0)
      << log;
  const std::string csv = cxr::read_text(dir / "p.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 101);

  // A checkpoint with a corrupt weight file is refused with a clear message.
  cxr::testing::write_bytes(fs::path(run) / "model.safetensors", "broken");
  EXPECT_EQ(
      cxr::testing::run_command(bin + " predict " + run + " " + img, &log), 4);
  EXPECT_NE(log.find("model.safetensors"), std::string::npos) << log;
}

}  // namespace
