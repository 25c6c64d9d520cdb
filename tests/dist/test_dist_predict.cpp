// Sharded `cxr predict` and `cxr evaluate` (docs/distributed.md): with
// --nproc 2 each rank scores whole batches of the inputs and rank 0 writes
// one result in input order, the same bytes as 1 rank (whole batches keep
// the float rounding of the forward pass; the bootstrap runs on rank 0 with
// the same seed). Workers are processes on 127.0.0.1.
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;

/// A tiny run (one epoch on the tiny dataset) to predict with.
void train_tiny(const TempDir& dir) {
  cxr::testing::make_tiny_dataset(dir / "data");
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(
                std::string(CXR_BINARY) + " train " + (dir / "data").string() +
                    " --size 16 --filters 4,8 --no-augment --epochs 1 "
                    "--batch-size 6 --threads 1 --no-cache --quiet "
                    "--device cpu --out " +
                    (dir / "run").string(),
                &log),
            0)
      << log;
}

class DistPredict : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    train_tiny(*dir_);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static TempDir* dir_;
};
TempDir* DistPredict::dir_ = nullptr;

TEST_F(DistPredict, TwoRanksWriteTheSameCsvJsonAndTableAsOne) {
  const TempDir& dir = *dir_;
  // 24 files in batches of 4: each rank takes 3 batches.
  const std::string inputs =
      (dir / "data" / "test").string() + " " + (dir / "data" / "val").string();
  auto cmd = [&](const std::string& name) {
    return std::string(CXR_BINARY) + " predict " + (dir / "run").string() +
           " " + inputs + " --batch-size 4 --threads 1 --device cpu --csv " +
           (dir / (name + ".csv")).string() + " --json " +
           (dir / (name + ".json")).string();
  };
  std::string log1, log2;
  // stdout to a file, stderr (the launcher's and the ranks' lines) to log.
  auto to_file = [&](const std::string& c, const std::string& name) {
    return "(" + c + " > " + (dir / name).string() + ")";
  };
  ASSERT_EQ(cxr::testing::run_command(to_file(cmd("one"), "one.txt"), &log1), 0)
      << log1;
  ASSERT_EQ(cxr::testing::run_command(
                to_file(cmd("two") + " --nproc 2 --dist-timeout 60", "two.txt"),
                &log2),
            0)
      << log2;
  const std::string csv = read_text(dir / "one.csv");
  EXPECT_EQ(count_of(csv, "\n"), 25);  // header + 24 images
  EXPECT_EQ(read_text(dir / "two.csv"), csv);
  EXPECT_EQ(read_text(dir / "two.json"), read_text(dir / "one.json"));
  // The table on stdout too, printed once (rank 0); rank 1 says nothing.
  EXPECT_EQ(read_text(dir / "two.txt"), read_text(dir / "one.txt"));
  EXPECT_NE(log2.find("cxr predict: rank 0 of 2 scores files 1-12 of 24"),
            std::string::npos)
      << log2;
  EXPECT_NE(log2.find("[rank 1] cxr predict: rank 1 of 2 scores files 13-24 "
                      "of 24"),
            std::string::npos)
      << log2;
}

TEST_F(DistPredict, TwoRanksEvaluateAsOne) {
  const TempDir& dir = *dir_;
  auto cmd = [&](const std::string& name) {
    return std::string(CXR_BINARY) + " evaluate " + (dir / "run").string() +
           " --split test --batch-size 4 --bootstrap 200 --threads 1 "
           "--device cpu --no-cache --out " +
           (dir / name).string();
  };
  std::string out1, out2;
  ASSERT_EQ(cxr::testing::run_command(cmd("e1"), &out1), 0) << out1;
  ASSERT_EQ(cxr::testing::run_command(
                cmd("e2") + " --nproc 2 --dist-timeout 60", &out2),
            0)
      << out2;
  const std::string csv = read_text(dir / "e1" / "predictions.csv");
  EXPECT_EQ(count_of(csv, "\n"), 13);  // header + 12 test images
  EXPECT_EQ(read_text(dir / "e2" / "predictions.csv"), csv);
  // metrics.json: the same numbers, bootstrap CIs included; only the
  // output folder's name differs.
  EXPECT_EQ(read_text(dir / "e2" / "metrics.json"),
            read_text(dir / "e1" / "metrics.json"));
  // 3 batches of 4: rank 0 scores two, rank 1 one.
  EXPECT_NE(out2.find("cxr evaluate: rank 0 of 2 scores images 1-8 of 12"),
            std::string::npos)
      << out2;
  EXPECT_NE(
      out2.find("[rank 1] cxr evaluate: rank 1 of 2 scores images 9-12 of 12"),
      std::string::npos)
      << out2;
  EXPECT_EQ(count_of(out2, "wrote "), 1) << out2;
}

TEST_F(DistPredict, OodSetsRefuseRanksWithOneLine) {
  std::string log;
  EXPECT_EQ(cxr::testing::run_command(std::string(CXR_BINARY) + " evaluate " +
                                          (dir_->path() / "run").string() +
                                          " --ood-sets --nproc 2",
                                      &log),
            2)
      << log;
  EXPECT_NE(log.find("--ood-sets runs in one process"), std::string::npos)
      << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
}

}  // namespace
