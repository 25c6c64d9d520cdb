// Bad input to the flags and folders that calibration and the OOD warning
// added: each gets its documented exit code and one line naming the flag or
// the folder, before any data is read or any training starts.
#include "cxr/common/fs.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;

struct Case {
  std::string args;
  int exit_code;
  std::string needle;
};

TEST(TrustBadInput, FlagsAndFoldersAreRefusedWithOneLine) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  cxr::train::RunOptions o;
  o.data.root = (dir / "data").string();
  o.data.size = 16;
  o.model = cxr::testing::tiny_config();
  o.train = cxr::testing::tiny_train_options();
  o.device = "cpu";
  o.out_dir = (dir / "run").string();
  cxr::train::train_run(o);
  const std::string run = o.out_dir;
  const std::string bin = CXR_BINARY;
  const std::vector<Case> cases = {
      {"calibrate " + (dir / "nope").string(), 4, "nope"},
      {"calibrate " + run + " --from " + run, 2, "--from"},
      {"calibrate " + run + " --ood-combine median", 2, "--ood-combine"},
      {"evaluate " + run + " --ood-sets --split nope", 2, "--split"},
      {"train " + o.data.root + " --size 16 --out " + (dir / "r2").string() +
           " --ood-false-flag-rate nan",
       2, "--ood-false-flag-rate"},
  };
  for (const auto& c : cases) {
    std::string log;
    const int rc =
        cxr::testing::run_command(bin + " " + c.args + " 2>&1", &log);
    EXPECT_EQ(rc, c.exit_code) << c.args << "\n" << log;
    EXPECT_NE(log.find(c.needle), std::string::npos) << c.args << "\n" << log;
    // The error is the last line and the only one that starts "cxr: error".
    size_t errors = 0;
    for (size_t p = log.find("cxr: error"); p != std::string::npos;
         p = log.find("cxr: error", p + 1)) {
      ++errors;
    }
    EXPECT_EQ(errors, 1u) << c.args << "\n" << log;
  }
  EXPECT_FALSE(fs::exists(dir / "r2" / "model.safetensors"));
}

}  // namespace
