// Baseline CNN configuration checks.
#include "cxr/common/error.h"
#include "cxr/models/classifier.h"
#include "test_util.h"

namespace cxr::models {
namespace {

// Found while fuzzing run folders (fuzz/fuzz_run_folder): the "too many
// pooling blocks" check shifted the input size by the block count, undefined
// for 32 or more blocks; on x86 40 blocks of a 1024 px input passed as 8.
TEST(BaselineConfig, MoreBlocksThanBitsIsAConfigError) {
  ModelConfig c;
  c.arch = "baseline";
  c.input_size = 1024;
  c.filters.assign(40, 1);
  try {
    make_model(c);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("too small for 40 pooling blocks"),
              std::string::npos)
        << e.what();
  }
  c.filters.assign(10, 1);  // 1024 px halves 10 times to 1: still valid
  EXPECT_NO_THROW(make_model(c));
}

}  // namespace
}  // namespace cxr::models
